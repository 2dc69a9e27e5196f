#include "core/filter.h"

#include <stdio.h>
#include <stdlib.h>

#include "conf/config.h"
#include "base/log.h"

/*
 * One block per worker view: the slot array of the global filters, one slot
 * array per route (indexed by route_config.index), then the slots.
 */
struct filter_contexts {
    void **global;
    void ***route;
};

static bool needs_context(const struct filter_instance *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (f[i].type->context_new)
            return true;
    return false;
}

static void fill(void **slots, const struct filter_instance *f, size_t n, struct worker *w)
{
    for (size_t i = 0; i < n; i++)
        if (f[i].type->context_new)
            slots[i] = f[i].type->context_new(f[i].instance, w);
}

static void drain(void **slots, const struct filter_instance *f, size_t n)
{
    for (size_t i = n; i-- > 0;)
        if (f[i].type->context_free)
            f[i].type->context_free(f[i].instance, slots[i]);
}

struct filter_contexts *filter_contexts_new(const struct snapshot *s, struct worker *w)
{
    bool any = needs_context(s->filters, s->num_filters);
    size_t total = s->num_filters;
    for (size_t r = 0; r < s->num_routes; r++) {
        any |= needs_context(s->routes[r].filters, s->routes[r].num_filters);
        total += s->routes[r].num_filters;
    }
    if (!any)
        return NULL;
    size_t head = sizeof(struct filter_contexts) + s->num_routes * sizeof(void **);
    struct filter_contexts *fc = calloc(1, head + total * sizeof(void *));
    if (!fc) {
        log_error("out of memory");
        abort();
    }
    fc->route = (void ***)(fc + 1);
    void **slot = (void **)((char *)fc + head);
    fc->global = slot;
    slot += s->num_filters;
    for (size_t r = 0; r < s->num_routes; r++) {
        fc->route[r] = slot;
        slot += s->routes[r].num_filters;
    }
    fill(fc->global, s->filters, s->num_filters, w);
    for (size_t r = 0; r < s->num_routes; r++)
        fill(fc->route[r], s->routes[r].filters, s->routes[r].num_filters, w);
    return fc;
}

void filter_contexts_free(struct filter_contexts *fc, const struct snapshot *s)
{
    if (!fc)
        return;
    for (size_t r = s->num_routes; r-- > 0;)
        drain(fc->route[r], s->routes[r].filters, s->routes[r].num_filters);
    drain(fc->global, s->filters, s->num_filters);
    free(fc);
}

void *filter_context(const struct filter_contexts *fc, const struct snapshot *s,
                     const struct route_config *route, size_t i)
{
    if (!fc)
        return NULL;
    size_t globals = s->num_filters;
    if (i < globals)
        return fc->global[i];
    return route ? fc->route[route->index][i - globals] : NULL;
}
