/**
 * Chat on top of the Client: the room's conversation (history merged with live
 * messages, de-duplicated by chat_id, in order), private conversations per peer,
 * unread counts, and paging back through older history.
 */
import { TypedEmitter } from '../shared/events';
import type { ChatEntry } from '../shared/protocol/messages';
import type { Client } from './main_client';

export type ChatEvents = {
  /** A message to show: `own` is true for what you sent. */
  message: [ChatEntry, { own: boolean }];
  /** The room's history arrived (on join) or grew backwards (loadOlder). */
  history: [string, ChatEntry[]];
};

export interface ChatClientOptions {
  /** Messages kept per conversation (oldest dropped first). */
  keep?: number;
}

export class ChatClient extends TypedEmitter<ChatEvents> {
  private readonly rooms = new Map<string, ChatEntry[]>();
  private readonly privates = new Map<string, ChatEntry[]>();
  private readonly seen = new Set<string>();
  private readonly unread = new Map<string, number>();
  private readonly keep: number;

  constructor(
    readonly client: Client,
    options: ChatClientOptions = {},
  ) {
    super();
    this.keep = options.keep ?? 1000;
    // On join the room's conversation is announced even when empty.
    client.on('history', ({ room_id, messages }) => this.mergeHistory(room_id, messages, true));
    client.on('chat', (entry) => this.receive(entry, false));
    // After a reconnect, fetch what was said meanwhile; duplicates are dropped by chat_id.
    client.on('reconnected', ({ room }) => {
      if (!room) return;
      client.chatHistory().then(
        (r) => this.mergeHistory(r.room_id, r.messages),
        () => undefined,
      );
    });
  }

  /** The conversation of a room (default: yours), oldest first. */
  roomMessages(roomId = this.client.room?.room_id): ChatEntry[] {
    return roomId ? (this.rooms.get(roomId) ?? []).slice() : [];
  }

  /** Private messages with one user (by user_id), oldest first. */
  privateMessages(peerId: string): ChatEntry[] {
    return (this.privates.get(peerId) ?? []).slice();
  }

  unreadCount(conversation: string): number {
    return this.unread.get(conversation) ?? 0;
  }

  markRead(conversation: string): void {
    this.unread.delete(conversation);
  }

  async send(message: string): Promise<ChatEntry> {
    const ack = await this.client.sendChat(message);
    const me = this.client.user!;
    return this.receive(
      {
        chat_id: ack.chat_id,
        seq: ack.seq,
        room_id: this.client.room?.room_id ?? null,
        user_id: me.user_id,
        username: me.username,
        message,
        timestamp: ack.timestamp,
        is_private: false,
        recipient: null,
      },
      true,
    );
  }

  async sendPrivate(to: string, message: string): Promise<ChatEntry> {
    const ack = await this.client.sendPrivate(to, message);
    const me = this.client.user!;
    return this.receive(
      {
        chat_id: ack.chat_id,
        seq: ack.seq,
        room_id: null,
        user_id: me.user_id,
        username: me.username,
        message,
        timestamp: ack.timestamp,
        is_private: true,
        recipient: ack.recipient ?? to,
      },
      true,
    );
  }

  /** Fetch older room messages than the oldest one held. Returns how many arrived. */
  async loadOlder(limit = 50): Promise<number> {
    const roomId = this.client.room?.room_id;
    if (!roomId) return 0;
    const r = await this.client.chatHistory(limit, this.roomList(roomId)[0]?.chat_id);
    return this.mergeHistory(roomId, r.messages);
  }

  /** Merges history into a room's conversation; emits 'history' when it grew (or always). Returns how many were new. */
  private mergeHistory(roomId: string, messages: ChatEntry[], always = false): number {
    const list = this.roomList(roomId);
    let added = 0;
    for (const m of messages) if (this.insert(list, m)) added++;
    if (added || always) this.emit('history', roomId, list.slice());
    return added;
  }

  private receive(entry: ChatEntry, own: boolean): ChatEntry {
    const key = entry.is_private ? (own ? entry.recipient! : entry.user_id) : entry.room_id;
    if (!key) return entry;
    const list = entry.is_private ? this.privateList(key) : this.roomList(key);
    if (this.insert(list, entry)) {
      if (!own) this.unread.set(key, (this.unread.get(key) ?? 0) + 1);
      this.emit('message', entry, { own });
    }
    return entry;
  }

  /** Insert in server order (seq; timestamps can tie within a millisecond); false when already held. */
  private insert(list: ChatEntry[], entry: ChatEntry): boolean {
    if (this.seen.has(entry.chat_id)) return false;
    this.seen.add(entry.chat_id);
    let i = list.length;
    while (i > 0 && list[i - 1].seq > entry.seq) i--;
    list.splice(i, 0, entry);
    while (list.length > this.keep) {
      const dropped = list.shift()!;
      this.seen.delete(dropped.chat_id);
    }
    return true;
  }

  private roomList(roomId: string): ChatEntry[] {
    let l = this.rooms.get(roomId);
    if (!l) this.rooms.set(roomId, (l = []));
    return l;
  }

  private privateList(peerId: string): ChatEntry[] {
    let l = this.privates.get(peerId);
    if (!l) this.privates.set(peerId, (l = []));
    return l;
  }
}
