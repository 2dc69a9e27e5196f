/*
 * proxy: one exchange's upstream side, protocol-blind (ARCHITECTURE "The
 * exchange", SPEC 2.3, 3.1): pick a target, open a stream on it through the
 * upstream's codec (upstream/codec.h: HTTP/1.1 or HTTP/2), move the request
 * body to it and the response back to the exchange, retry on another
 * target where SPEC 2.3 allows, and turn failures into 502, 503 or 504.
 *
 * The proxy is the one owner of backpressure: one high-water mark
 * (UPSTREAM_HIGH_WATER), applied in one place both ways. Large plain
 * bodies may go socket to socket with net/splice when the codec and the
 * client side both allow it. It reaches the client only through the
 * exchange's functions; the protocol-blind request fields it adds
 * (X-Forwarded-*, hop-by-hop removal) are set here, not in a codec.
 *
 * The exchange does not name the proxy: the proxy registers itself as the
 * exchange's upstream side (exchange_set_upstream) through proxy_register(),
 * which main calls before it starts the workers (and a test that proxies,
 * before its first request). So neither exchange.c nor worker.c includes
 * proxy.h, and no circle joins them.
 *
 * Owns: struct proxy (in the exchange's arena), the stream while the
 * exchange uses it, the replay copy of a small request body (for retries),
 * and its timer. An arena cleanup releases all of it if the exchange ends
 * early.
 *
 * Thread: the worker's thread.
 */
#ifndef SLUICE_PROXY_H
#define SLUICE_PROXY_H

/*
 * Makes the proxy the exchange's upstream side (exchange_set_upstream).
 * Idempotent; call before the first exchange is routed to an upstream.
 */
void proxy_register(void);

#endif
