/*
 * tunnel: a WebSocket after its 101 (SPEC 3.4, ARCHITECTURE "The
 * exchange"): bytes relayed both ways unchanged between the exchange's
 * client side and the upstream connection the codec gave up
 * (upstream_codec_ops.tunnel_conn), until both sides sent their FIN, one
 * failed, or websocket_idle_timeout_ms passed with no byte either way.
 *
 * The exchange stays alive for the tunnel's whole life: it holds the
 * snapshot view the upgrade started under (reloads do not touch it), and
 * its end writes the access-log line (status 101, bytes both ways, and
 * x->close_reason: "client", "upstream", "idle" or "drain").
 *
 * Backpressure: the same mark as the proxy's (UPSTREAM_HIGH_WATER). Bytes
 * the client has not taken past it stop reading the upstream until the
 * client side drains; bytes the upstream has not taken past it pause the
 * client's side. Half-close: a FIN from one side becomes shutdown(SHUT_WR)
 * (or END_STREAM) towards the other once what came before it is written.
 *
 * Owns: its state in the exchange's arena, the upstream stream (cancelled
 * at the end, which closes the connection: never pooled), one idle
 * deadline and one deferred-work node.
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
struct tunnel;
struct upstream_stream;

/*
 * Starts relaying for `x`, whose 101 head was sent: switches the client
 * side to raw bytes (exchange_side_ops.tunnel) and takes `up`'s events.
 * `stream` is cancelled by tunnel_stop. Never NULL (arena memory).
 */
struct tunnel *tunnel_start(struct exchange *x, struct upstream_stream *stream, struct conn *up);

/* The client sent bytes (x->req_body) or its FIN (x->req_body_done). */
void tunnel_on_client_data(struct tunnel *t);

/* The client side's output drained: the upstream may be read again. */
void tunnel_on_client_drain(struct tunnel *t);

/* Releases the upstream connection and the timers (the exchange's arena cleanup). Idempotent. */
void tunnel_stop(struct tunnel *t);

#endif
