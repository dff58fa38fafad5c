/**
 * A TCP proxy for tests: a slave that becomes unreachable (the proxy stops, the
 * port is closed) and comes back on the same port.
 *
 * @module
 */

/** A TCP proxy to `target` that can be switched off and on again on the same port. */
export class TcpProxy {
  #listener: Deno.Listener | undefined;
  #conns = new Set<Deno.Conn>();
  readonly port: number;
  readonly target: number;

  constructor(port: number, target: number) {
    this.port = port;
    this.target = target;
  }

  start(): void {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: this.port });
    (async () => {
      for await (const client of this.#listener!) {
        this.#conns.add(client);
        Deno.connect({ hostname: "127.0.0.1", port: this.target }).then((server) => {
          this.#conns.add(server);
          const close = () => {
            for (const c of [client, server]) {
              try {
                c.close();
              } catch { /* closed */ }
              this.#conns.delete(c);
            }
          };
          client.readable.pipeTo(server.writable).catch(() => {}).finally(close);
          server.readable.pipeTo(client.writable).catch(() => {}).finally(close);
        }).catch(() => client.close());
      }
    })().catch(() => {});
  }

  stop(): void {
    try {
      this.#listener?.close();
    } catch { /* closed */ }
    this.#listener = undefined;
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    this.#conns.clear();
  }
}
