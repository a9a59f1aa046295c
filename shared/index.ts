export * from './constants';
export * from './errors';
export * from './events';
export * from './log';
export * from './protocol/framing';
export * from './protocol/messages';
