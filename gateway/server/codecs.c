#include "server/codecs.h"

#include "server/http1_server.h"
#include "server/http2_server.h"

static int accept_cleartext(struct worker *w, int fd, const struct sockaddr_storage *peer,
                            socklen_t peerlen, unsigned flags)
{
    if (flags & LISTEN_H2C_ONLY)
        return http2_server_accept(w, fd, peer, flags);
    return http1_server_accept(w, fd, peer, peerlen, flags);
}

const struct listener_codecs server_codecs = {
    .accept = accept_cleartext,
    .adopt_http1 = http1_server_adopt,
    .adopt_http2 = http2_server_adopt,
};
