/*
 * config_listen: the "listen" section (SPEC 2.2): addresses, protocols, TLS.
 */
#include <stdlib.h>
#include <string.h>

#include "conf/config_int.h"
#include "net/addr.h"
#include "net/tls.h"

static void build_listener(struct config_error *err, struct listen_config *l, const json_t *v)
{
    static const char *const keys[] = {"address", "protocols", "tls", NULL};
    if (!config_want_object(err, v, "{\"address\": \"0.0.0.0:8080\"}"))
        return;
    config_check_keys_strict(err, v, keys);
    const char *address = config_get_string(err, v, "address", true, true);
    if (address) {
        char why[200];
        if (addr_parse_bind(address, &l->addr, &l->addrlen, why, sizeof why))
            l->address = xstrdup(address);
        else
            config_key_error(err, "address",
                             "invalid address \"%s\": %s (expected IP:PORT, e.g. "
                             "\"0.0.0.0:8080\" or \"[::]:8080\")",
                             address, why);
    }
    const json_t *tls = json_object_get(v, "tls");
    if (tls)
        l->tls = tls_server_build(err, tls, json_object_get(v, "protocols"));
    /* On a TLS listener "protocols" is the ALPN list: tls.c reads it. */
    const json_t *protocols = tls ? NULL : json_object_get(v, "protocols");
    if (protocols) {
        size_t mark = config_path_push(err, ".protocols");
        if (!json_is_array(protocols) || json_array_size(protocols) == 0) {
            config_error_add(err, "", "must be a non-empty array, e.g. [\"http/1.1\"]");
        } else {
            size_t i;
            json_t *p;
            bool http1 = false;
            json_array_foreach(protocols, i, p)
            {
                size_t m2 = config_path_push_index(err, i);
                const char *name = json_string_value(p);
                if (!name)
                    config_error_add(err, "", "must be a string, not %s", config_json_kind(p));
                else if (strcmp(name, "http/1.1") == 0)
                    http1 = true;
                else if (strcmp(name, "h2c") == 0)
                    l->h2c = true;
                else if (strcmp(name, "h2") == 0)
                    config_error_add(err, "",
                                     "\"h2\" needs a TLS listener (\"tls\"); for cleartext "
                                     "HTTP/2 use \"h2c\"");
                else
                    config_error_add(
                        err, "", "unknown protocol \"%s\" (expected one of: http/1.1, h2c)", name);
                config_path_pop(err, m2);
            }
            l->h2c_only = l->h2c && !http1;
        }
        config_path_pop(err, mark);
    }
}

void config_build_listeners(struct config_error *err, struct snapshot *s, const json_t *v)
{
    if (!v) {
        config_error_add(err, ".listen",
                         "missing: add at least one listener, e.g. [{\"address\": "
                         "\"0.0.0.0:8080\"}]");
        return;
    }
    if (!json_is_array(v) || json_array_size(v) == 0) {
        config_error_add(err, ".listen",
                         "must be a non-empty array of listeners, e.g. [{\"address\": "
                         "\"0.0.0.0:8080\"}]");
        return;
    }
    size_t n = json_array_size(v);
    s->listeners = xcalloc(n, sizeof *s->listeners);
    s->num_listeners = n;
    size_t mark = config_path_push(err, ".listen");
    for (size_t i = 0; i < n; i++) {
        size_t m2 = config_path_push_index(err, i);
        struct listen_config *l = &s->listeners[i];
        build_listener(err, l, json_array_get(v, i));
        for (size_t j = 0; j < i; j++)
            if (l->address &&
                addr_same(&l->addr, l->addrlen, &s->listeners[j].addr, s->listeners[j].addrlen))
                config_error_add(err, ".address", "the same address as listen[%zu]", j);
        config_path_pop(err, m2);
    }
    config_path_pop(err, mark);
}
