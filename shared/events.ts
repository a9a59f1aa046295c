/**
 * A typed event emitter. A listener that throws is caught and reported through
 * `onListenerError`, so one bad listener never breaks the loop that emits
 * (mediasoup's EnhancedEventEmitter.safeEmit).
 */
import { EventEmitter } from 'node:events';

export type EventMap = Record<string, unknown[]>;

export class TypedEmitter<E extends EventMap> {
  private readonly ee = new EventEmitter();
  /** Where listener exceptions go; defaults to stderr. */
  onListenerError: (event: string, error: unknown) => void = (event, error) => {
    process.stderr.write(`listener for "${event}" threw: ${error instanceof Error ? error.stack : String(error)}\n`);
  };

  constructor() {
    this.ee.setMaxListeners(0);
  }

  on<K extends keyof E & string>(event: K, listener: (...args: E[K]) => void): this {
    this.ee.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  once<K extends keyof E & string>(event: K, listener: (...args: E[K]) => void): this {
    this.ee.once(event, listener as (...args: unknown[]) => void);
    return this;
  }

  off<K extends keyof E & string>(event: K, listener: (...args: E[K]) => void): this {
    this.ee.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  removeAllListeners<K extends keyof E & string>(event?: K): this {
    if (event === undefined) this.ee.removeAllListeners();
    else this.ee.removeAllListeners(event);
    return this;
  }

  listenerCount<K extends keyof E & string>(event: K): number {
    return this.ee.listenerCount(event);
  }

  /** Emit to each listener; a throwing listener is reported and the others still run. */
  emit<K extends keyof E & string>(event: K, ...args: E[K]): boolean {
    const listeners = this.ee.rawListeners(event) as ((...a: unknown[]) => void)[];
    if (listeners.length === 0) return false;
    for (const l of listeners) {
      try {
        // rawListeners returns once-wrappers that remove themselves when called.
        l.apply(this, args);
      } catch (e) {
        try {
          this.onListenerError(event, e);
        } catch {
          /* the reporter itself failed: nothing more to do */
        }
      }
    }
    return true;
  }

  /** Resolves with the event's arguments the next time it fires. */
  waitFor<K extends keyof E & string>(event: K, timeoutMs = 10_000): Promise<E[K]> {
    return new Promise((resolve, reject) => {
      const onEvent = (...args: E[K]) => {
        clearTimeout(timer);
        resolve(args);
      };
      const timer = setTimeout(() => {
        this.off(event, onEvent);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}"`));
      }, timeoutMs);
      this.once(event, onEvent);
    });
  }
}
