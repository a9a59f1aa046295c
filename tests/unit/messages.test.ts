/**
 * The message catalogue (shared/protocol/messages.ts) and the error registry's
 * ProtocolError (shared/errors.ts): names, envelope, request/response pairing,
 * name validation.
 */
import { describe, it, expect } from 'vitest';
import {
  MESSAGE_TYPES,
  MT,
  isMessageType,
  EnvelopeSchema,
  REQUEST_SCHEMAS,
  RESPONSE_SCHEMAS,
  PUSH_SCHEMAS,
  RESERVED_TYPES,
  isRequestType,
  usernameProblem,
  roomNameProblem,
} from '../../shared/protocol/messages';
import { ERROR_CODES, ProtocolError, formatErrorMessage, isErrorCode, type ErrorCode } from '../../shared/errors';
import { LIMITS } from '../../shared/constants';

/**
 * Copied by hand from ../shared/ORIGINAL_PROTOCOL.md "Message type names of the original",
 * so that a rename in messages.ts cannot slip through by editing one list.
 */
const ORIGINAL_TYPES = [
  'CONNECT', 'DISCONNECT', 'HEARTBEAT', 'USER_JOIN', 'USER_LEAVE', 'USER_LIST', 'ROOM_CREATE',
  'ROOM_JOIN', 'ROOM_LEAVE', 'ROOM_LIST', 'VIDEO_FRAME', 'AUDIO_FRAME', 'VIDEO_START', 'VIDEO_STOP',
  'AUDIO_START', 'AUDIO_STOP', 'SCREEN_SHARE', 'CHAT_MESSAGE', 'CHAT_HISTORY', 'FILE_UPLOAD_START',
  'FILE_UPLOAD_CHUNK', 'FILE_UPLOAD_END', 'FILE_DOWNLOAD_REQUEST', 'FILE_DOWNLOAD_CHUNK',
  'FILE_DOWNLOAD_END', 'FILE_LIST', 'FILE_DELETE', 'MUTE_USER', 'UNMUTE_USER', 'KICK_USER',
  'RECORDING_START', 'RECORDING_STOP', 'SUCCESS', 'ERROR', 'ACK',
];

describe('message type names', () => {
  it('the hand-copied original list has its 35 names', () => {
    expect(ORIGINAL_TYPES).toHaveLength(35);
    expect(new Set(ORIGINAL_TYPES).size).toBe(35);
  });

  it.each(ORIGINAL_TYPES)('original type %s is in MESSAGE_TYPES', (t) => {
    expect(MESSAGE_TYPES).toContain(t);
    expect(isMessageType(t)).toBe(true);
  });

  it('MESSAGE_TYPES starts with the original names, in the original order', () => {
    expect(MESSAGE_TYPES.slice(0, ORIGINAL_TYPES.length)).toEqual(ORIGINAL_TYPES);
  });

  it('MESSAGE_TYPES has no duplicates and every name is UPPER_SNAKE', () => {
    expect(new Set(MESSAGE_TYPES).size).toBe(MESSAGE_TYPES.length);
    for (const t of MESSAGE_TYPES) expect(t).toMatch(/^[A-Z]+(_[A-Z]+)*$/);
  });

  it('MT maps each name to itself, and has nothing else', () => {
    for (const t of MESSAGE_TYPES) expect(MT[t]).toBe(t);
    expect(Object.keys(MT).sort()).toEqual([...MESSAGE_TYPES].sort());
    expect(MT.CHAT_MESSAGE).toBe('CHAT_MESSAGE');
  });

  it('MT is frozen', () => {
    expect(Object.isFrozen(MT)).toBe(true);
    expect(() => {
      (MT as Record<string, string>).CHAT_MESSAGE = 'X';
    }).toThrow();
  });

  it('isMessageType refuses anything else', () => {
    for (const t of ['', 'chat_message', 'CHAT', 'CHAT_MESSAGE ', 'toString', '__proto__', 42, null, undefined, {}]) {
      expect(isMessageType(t)).toBe(false);
    }
  });
});

describe('EnvelopeSchema', () => {
  const original = {
    type: 'ROOM_JOIN',
    data: { room_id: 'r-1', password: null },
    sender: 'u-1',
    recipient: 'u-2',
    room_id: 'r-1',
    timestamp: 1732600000.123,
    message_id: '9b2f0c4e-7d3a-4e8b-9a51-0c1d2e3f4a5b',
  };

  it("accepts the original's envelope with all fields, unchanged", () => {
    const r = EnvelopeSchema.safeParse(original);
    expect(r.success).toBe(true);
    if (r.success) expect(r.data).toEqual(original);
  });

  it('accepts a missing data, as {}', () => {
    const { data: _omit, ...noData } = original;
    const r = EnvelopeSchema.safeParse(noData);
    expect(r.success).toBe(true);
    if (r.success) expect(r.data.data).toEqual({});
  });

  it('accepts data: null, as {}', () => {
    const r = EnvelopeSchema.safeParse({ ...original, data: null });
    expect(r.success).toBe(true);
    if (r.success) expect(r.data.data).toEqual({});
  });

  it('accepts null addressing fields (as the original sends them)', () => {
    const env = { ...original, sender: null, recipient: null, room_id: null, message_id: null, timestamp: null };
    const r = EnvelopeSchema.safeParse(env);
    expect(r.success).toBe(true);
    if (r.success) {
      expect(r.data.sender).toBeNull();
      expect(r.data.recipient).toBeNull();
      expect(r.data.room_id).toBeNull();
    }
  });

  it('regression: empty-string addressing fields (an original client before it has an id) are read as null', () => {
    const r = EnvelopeSchema.safeParse({ ...original, sender: '', recipient: '', room_id: '', message_id: '' });
    expect(r.success).toBe(true);
    if (r.success) {
      expect(r.data.sender).toBeNull();
      expect(r.data.recipient).toBeNull();
      expect(r.data.room_id).toBeNull();
      expect(r.data.message_id).toBeNull();
    }
  });

  it('accepts missing addressing fields: only type is required', () => {
    expect(EnvelopeSchema.safeParse({ type: 'HEARTBEAT' }).success).toBe(true);
    expect(EnvelopeSchema.safeParse({ type: 'HEARTBEAT', data: {} }).success).toBe(true);
  });

  it('accepts reply_to and ignores unknown extra fields', () => {
    const r = EnvelopeSchema.safeParse({ ...original, reply_to: 'm-0', future_field: [1, 2] });
    expect(r.success).toBe(true);
    if (r.success) expect(r.data.reply_to).toBe('m-0');
  });

  it('does not itself check the type name (that is UNKNOWN_MESSAGE_TYPE, not INVALID_ENVELOPE)', () => {
    expect(EnvelopeSchema.safeParse({ ...original, type: 'NO_SUCH_TYPE' }).success).toBe(true);
  });

  it.each([
    ['data an array', { ...original, data: [1, 2] }],
    ['data an empty array', { ...original, data: [] }],
    ['data a string', { ...original, data: 'x' }],
    ['data a number', { ...original, data: 1 }],
    ['type a number', { ...original, type: 7 }],
    ['type missing', (({ type: _t, ...rest }) => rest)(original)],
    ['type empty', { ...original, type: '' }],
    ['type null', { ...original, type: null }],
    ['timestamp a string', { ...original, timestamp: '1732600000.123' }],
    ['timestamp Infinity', { ...original, timestamp: Infinity }],
    ['timestamp NaN', { ...original, timestamp: NaN }],
    ['sender a number', { ...original, sender: 12 }],
    ['room_id an object', { ...original, room_id: { id: 'r-1' } }],
    ['message_id a number', { ...original, message_id: 5 }],
    ['message_id too long', { ...original, message_id: 'x'.repeat(129) }],
  ])('rejects %s', (_, env) => {
    expect(EnvelopeSchema.safeParse(env).success).toBe(false);
  });

  it.each([
    ['an array', [original]],
    ['null', null],
    ['a string', 'ROOM_JOIN'],
    ['a number', 1],
  ])('rejects a top-level value that is %s', (_, v) => {
    expect(EnvelopeSchema.safeParse(v).success).toBe(false);
  });
});

describe('request, response and push schemas', () => {
  const requestTypes = Object.keys(REQUEST_SCHEMAS);

  it.each(requestTypes)('request %s has a RESPONSE_SCHEMAS entry', (t) => {
    expect(Object.prototype.hasOwnProperty.call(RESPONSE_SCHEMAS, t)).toBe(true);
  });

  it('RESPONSE_SCHEMAS has no entry without a request', () => {
    expect(Object.keys(RESPONSE_SCHEMAS).sort()).toEqual([...requestTypes].sort());
  });

  it('every request, push and reserved name is a message type', () => {
    for (const t of [...requestTypes, ...Object.keys(PUSH_SCHEMAS), ...RESERVED_TYPES]) {
      expect(isMessageType(t), t).toBe(true);
    }
  });

  it('isRequestType matches REQUEST_SCHEMAS, and refuses inherited names', () => {
    for (const t of requestTypes) expect(isRequestType(t)).toBe(true);
    for (const t of ['SUCCESS', 'ERROR', 'ACK', 'USER_JOIN', 'toString', 'constructor', '__proto__']) {
      expect(isRequestType(t), t).toBe(false);
    }
  });

  it('reserved types are not requests; server-only types are not requests', () => {
    for (const t of RESERVED_TYPES) expect(isRequestType(t), t).toBe(false);
    for (const t of ['SUCCESS', 'ERROR', 'ACK']) expect(isRequestType(t)).toBe(false);
  });

  // What a client of the original sends (ORIGINAL_PROTOCOL.md "Exchanges"): must still parse.
  it.each([
    ['CONNECT', { username: 'alice', user_id: '' }],
    ['HEARTBEAT', {}],
    ['ROOM_CREATE', { room_name: 'Lobby', is_private: false, password: null, max_participants: 50 }],
    ['ROOM_CREATE', { room_name: 'Secret', is_private: true, password: 'pw', max_participants: 10 }],
    ['ROOM_JOIN', { room_id: 'r-1', password: null }],
    ['ROOM_LEAVE', { room_id: 'r-1' }],
    ['CHAT_MESSAGE', { room_id: 'r-1', message: 'hello' }],
    ['CHAT_MESSAGE', { message: 'room_id only in the envelope' }],
    ['VIDEO_START', { user_id: 'u-1' }],
    ['AUDIO_START', { user_id: 'u-1' }],
    ['DISCONNECT', { user_id: 'u-1' }],
    ['ROOM_LIST', {}],
  ] as const)("the original's %s payload %j parses", (t, data) => {
    expect(REQUEST_SCHEMAS[t].safeParse(data).success).toBe(true);
  });

  it('host actions need a user_id or a username', () => {
    expect(REQUEST_SCHEMAS.MUTE_USER.safeParse({}).success).toBe(false);
    expect(REQUEST_SCHEMAS.MUTE_USER.safeParse({ user_id: 'u-1' }).success).toBe(true);
    expect(REQUEST_SCHEMAS.KICK_USER.safeParse({ username: 'bob', reason: 'spam' }).success).toBe(true);
    expect(REQUEST_SCHEMAS.KICK_USER.safeParse({ reason: 'spam' }).success).toBe(false);
  });
});

describe('usernameProblem', () => {
  it.each([
    'alice',
    'Bob Smith',
    "O'Brien",
    'user-1_2.3',
    'José',
    'Алёна',
    '李小龙',
    'محمد',
    'a',
    'x'.repeat(LIMITS.maxUsernameLength),
    // 32 code points but 64 UTF-16 units: the limit counts characters.
    '😀'.repeat(LIMITS.maxUsernameLength),
  ])('accepts %j', (name) => {
    expect(usernameProblem(name)).toBeNull();
  });

  it.each([
    ['empty', '', /empty/],
    ['only spaces', '   ', /empty/],
    ['leading space', ' alice', /spaces/],
    ['trailing space', 'alice ', /spaces/],
    ['leading tab', '\talice', /./],
    ['trailing newline', 'alice\n', /./],
    ['too long', 'x'.repeat(LIMITS.maxUsernameLength + 1), /longer than 32/],
    ['too long in emoji', '😀'.repeat(LIMITS.maxUsernameLength + 1), /longer than 32/],
    ['NUL', 'a\u0000b', /control/],
    ['newline inside', 'a\nb', /control/],
    ['BEL', 'a\u0007b', /control/],
    ['DEL', 'a\u007fb', /control/],
    ['C1 control', 'a\u0085b', /control/],
    ['line separator', 'a\u2028b', /control/],
    ['paragraph separator', 'a\u2029b', /control/],
    ['right-to-left override', 'a\u202eb', /control/],
  ])('refuses %s', (_, name, reason) => {
    const p = usernameProblem(name);
    expect(p).not.toBeNull();
    expect(p).toMatch(reason);
  });

  it('its reason reads as the INVALID_USERNAME message', () => {
    expect(new ProtocolError('INVALID_USERNAME', { reason: usernameProblem('') }).message).toBe('Username is empty');
  });
});

describe('roomNameProblem', () => {
  it.each([
    'General',
    'Team standup 9:30',
    "Réunion d'équipe",
    '会议室',
    'Комната 1',
    '🎉 Party',
    'x'.repeat(LIMITS.maxRoomNameLength),
    '😀'.repeat(LIMITS.maxRoomNameLength),
  ])('accepts %j', (name) => {
    expect(roomNameProblem(name)).toBeNull();
  });

  it.each([
    ['empty', ''],
    ['only spaces', '   '],
    ['too long', 'x'.repeat(LIMITS.maxRoomNameLength + 1)],
    ['too long in emoji', '😀'.repeat(LIMITS.maxRoomNameLength + 1)],
    ['NUL', 'a\u0000b'],
    ['newline inside', 'a\nb'],
    ['DEL', 'a\u007fb'],
    ['line separator', 'a\u2028b'],
  ])('refuses %s', (_, name) => {
    expect(roomNameProblem(name)).not.toBeNull();
  });

  it.each([
    ['leading space', ' Lobby'],
    ['trailing space', 'Lobby '],
    ['leading tab', '\tLobby'],
  ])('refuses a padded name: %s', (_, name) => {
    expect(roomNameProblem(name)).not.toBeNull();
  });
});

describe('ProtocolError and formatErrorMessage', () => {
  it('toWire carries code, message and hint, and details when there are some', () => {
    const e = new ProtocolError('ROOM_FULL', { room_name: 'Lobby', max: 50 });
    expect(e.toWire()).toEqual({
      code: 'ROOM_FULL',
      message: 'Room "Lobby" is full (50 participants)',
      hint: ERROR_CODES.ROOM_FULL.hint,
      details: { room_name: 'Lobby', max: 50 },
    });
    const bare = new ProtocolError('NOT_IN_ROOM').toWire();
    expect(bare).toEqual({ code: 'NOT_IN_ROOM', message: 'You are not in a room', hint: ERROR_CODES.NOT_IN_ROOM.hint });
    expect('details' in bare).toBe(false);
  });

  it('toWire survives JSON, as it is sent in an ERROR frame', () => {
    const w = new ProtocolError('UNKNOWN_MESSAGE_TYPE', { type: 'FOO' }).toWire();
    expect(JSON.parse(JSON.stringify(w))).toEqual(w);
  });

  it('is an Error with name, code, hint and fatal from the registry', () => {
    const e = new ProtocolError('FRAME_TOO_LARGE', { size: 5, limit: 4 });
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('ProtocolError');
    expect(e.code).toBe('FRAME_TOO_LARGE');
    expect(e.hint).toBe(ERROR_CODES.FRAME_TOO_LARGE.hint);
    expect(e.fatal).toBe(true);
    expect(new ProtocolError('FRAME_INVALID_JSON', { reason: 'x' }).fatal).toBe(false);
  });

  it('an explicit message overrides the template', () => {
    expect(new ProtocolError('INTERNAL_ERROR', {}, 'boom').message).toBe('boom');
  });

  it('formatErrorMessage fills {placeholders}', () => {
    expect(formatErrorMessage('FRAME_TOO_LARGE', { size: 5000000, limit: 1048576 })).toBe(
      'Frame of 5000000 bytes is larger than the limit of 1048576 bytes',
    );
    expect(formatErrorMessage('CONNECT_FAILED', { host: '10.0.0.2', port: 8888, reason: 'ECONNREFUSED' })).toBe(
      'Could not connect to 10.0.0.2:8888: ECONNREFUSED',
    );
    expect(formatErrorMessage('UNKNOWN_MESSAGE_TYPE', { type: 'FOO' })).toBe('Unknown message type "FOO"');
  });

  it('formatErrorMessage leaves a placeholder with no value as is, and does not expand values', () => {
    expect(formatErrorMessage('REQUEST_TIMEOUT', { type: 'ROOM_JOIN' })).toBe('No reply to ROOM_JOIN within {ms} ms');
    expect(formatErrorMessage('INVALID_PAYLOAD', { type: 'X', reason: '{type}' })).toBe('Invalid data for X: {type}');
    expect(formatErrorMessage('INVALID_PAYLOAD', { type: 'X', reason: '$& $1' })).toBe('Invalid data for X: $& $1');
  });

  it('every registry entry has a message, a hint and a scope; isErrorCode matches the registry', () => {
    for (const [code, spec] of Object.entries(ERROR_CODES)) {
      expect(code).toMatch(/^[A-Z0-9]+(_[A-Z0-9]+)*$/);
      expect(spec.message.length, code).toBeGreaterThan(0);
      expect(spec.hint.length, code).toBeGreaterThan(0);
      expect(['wire', 'file', 'local']).toContain(spec.scope);
      expect(isErrorCode(code)).toBe(true);
      // Every template renders with no placeholder left once its names are given.
      const names = [...spec.message.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      const filled = formatErrorMessage(code as ErrorCode, Object.fromEntries(names.map((n) => [n, 'v'])));
      expect(filled, code).not.toMatch(/\{\w+\}/);
    }
    for (const c of ['', 'nope', 'toString', '__proto__', 1, null]) expect(isErrorCode(c)).toBe(false);
  });
});

describe('names: joiners allowed, bidi overrides refused (regression)', () => {
  it('accepts ZWJ emoji sequences and ZWNJ in Persian words', async () => {
    const { usernameProblem, roomNameProblem } = await import('../../shared/protocol/messages');
    expect(usernameProblem('👨‍👩‍👧')).toBeNull();
    expect(usernameProblem('می‌خواهم')).toBeNull();
    expect(roomNameProblem('👨‍👩‍👧 family')).toBeNull();
  });
  it('refuses bidirectional overrides and isolates', async () => {
    const { usernameProblem, roomNameProblem } = await import('../../shared/protocol/messages');
    expect(usernameProblem('a\u202eb')).toMatch(/control/);
    expect(roomNameProblem('a\u202eb')).toMatch(/control/);
    expect(roomNameProblem('a\u2066b')).toMatch(/control/);
  });
});
