/**
 * A dgram `lookup` for sockets that only ever send to IP literals (the relay answers
 * datagrams' source addresses; a client resolves the server once). The default
 * dns.lookup per send (an isIP check and a nextTick) is wasted there: 6-12% of a send
 * measured on this machine (bench/relay.ts).
 */
export function ipLiteralLookup(
  address: string,
  _options: unknown,
  cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  cb(null, address, 4);
}
