/*
 * tunnel: a WebSocket after its 101 (SPEC 3.4, ARCHITECTURE "The
 * exchange"): bytes relayed both ways unchanged between the exchange's
 * client side and the upstream connection the codec gave up
 * (upstream_codec_ops.tunnel_conn), until both sides sent their FIN, one
 * failed, or websocket_idle_timeout_ms passed with no byte either way.
 *
 * The tunnel outlives the exchange that made it: tunnel_start copies what
 * the relay and the access-log line need into one small allocation (a
 * shell exchange, the counters and timers) plus an arena of the smallest
 * size (the strings the log prints, the cleanups a codec registers), and
 * rebinds the client codec to that shell (the side's `tunnel` op); the
 * caller then frees the request's exchange, its arena, the filters' state,
 * the proxy and the upstream stream. An idle tunnel holds those two,
 * the two connections (whose evbuffers hold no chain while empty) and the
 * reference to the worker's snapshot view it started under (reloads do not
 * touch it). Its end writes the access-log line (status 101, bytes both
 * ways, and x->close_reason: "client", "upstream", "idle" or "drain").
 *
 * Relay: through the connections' evbuffers (one read and one write per
 * message), and socket to socket with net/splice for a direction that
 * moves bulk (a read of more than CONN_SMALL_READ) between two plain
 * sockets; that direction's pipe goes back to the thread's spares as soon
 * as it is empty and its source has nothing more, so an idle tunnel holds
 * no pipe.
 *
 * Backpressure: the same mark as the proxy's (UPSTREAM_HIGH_WATER). Bytes
 * the client has not taken past it stop reading the upstream until the
 * client side drains; bytes the upstream has not taken past it pause the
 * client's side; with splice the pipe is the buffer. Half-close: a FIN from
 * one side becomes shutdown(SHUT_WR) (or END_STREAM) towards the other once
 * what came before it is written.
 *
 * Owns: its allocation, the upstream connection (closed at the end: never
 * pooled), the target's in-flight count, one idle deadline and one
 * deferred-work node.
 *
 * Re-entrancy: every ending (exchange_end, exchange_abort) runs from the
 * tunnel's deferred work, never from inside a call of the client codec.
 *
 * Thread: the worker's thread.
 */
#ifndef SLUICE_TUNNEL_H
#define SLUICE_TUNNEL_H

struct conn;
struct exchange;
struct target;
struct tunnel;

/*
 * Starts relaying for `x`, whose 101 head was sent, over `up` (the
 * upstream connection handed over by tunnel_conn, now the tunnel's) to a
 * target whose in_flight count the tunnel now holds. Makes the tunnel's
 * shell exchange and hands it to the client codec (exchange_side_ops.tunnel),
 * which uses it instead of `x` from then on. `x` itself is left to the
 * caller, who frees it (exchange_free) without accounting it: the shell
 * writes the access-log line when the tunnel closes.
 */
void tunnel_start(struct exchange *x, struct conn *up, struct target *target);

/*
 * The shell's exchange_tunnel_ops: the client sent bytes (x->req_body) or
 * its FIN (x->req_body_done); the client side's output drained (the
 * upstream may be read again); exchange_free of the shell (stops the
 * tunnel and frees it, the shell with it).
 */

#endif
