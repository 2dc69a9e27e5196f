/*
 * registry: the one list of filter types (STYLE rule 2). Adding a filter is
 * one new file in filters/ plus one extern declaration and one line below.
 */
#include <stddef.h>
#include <string.h>

#include "core/filter.h"

extern const struct filter_type filter_headers;

/*
 * Every available filter type. The order matters only for listing (the
 * names in error messages come out in this order) and is fixed: keep it as
 * in SPEC 4. Lookup is by name, so it does not affect which filter runs;
 * the order in which filters run is the order of the configuration's list.
 */
static const struct filter_type *const filter_types[] = {
    &filter_headers,
};

/* SPEC 4 filter types not provided yet, so the loader can say so instead of "unknown". */
static const char *const planned_types[] = {
    "api_key", "basic_auth", "jwt", "rate_limit", "rewrite", "cors", "ip_filter", "body_limit",
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const struct filter_type *filter_registry_find(const char *name, int *planned)
{
    if (planned)
        *planned = 0;
    if (!name)
        return NULL;
    for (size_t i = 0; i < COUNT(filter_types); i++)
        if (strcmp(filter_types[i]->name, name) == 0)
            return filter_types[i];
    for (size_t i = 0; i < COUNT(planned_types); i++) {
        if (strcmp(planned_types[i], name) == 0) {
            if (planned)
                *planned = 1;
            break;
        }
    }
    return NULL;
}

/*
 * Built on first call into a static buffer sized for every name; the list
 * is constant, so the result is too. Called from the loading thread only.
 */
const char *filter_registry_names(void)
{
    static char names[256];
    if (names[0])
        return names;
    size_t n = 0;
    for (size_t i = 0; i < COUNT(filter_types); i++) {
        size_t len = strlen(filter_types[i]->name);
        if (n + len + 3 > sizeof(names))
            break;
        if (i) {
            memcpy(names + n, ", ", 2);
            n += 2;
        }
        memcpy(names + n, filter_types[i]->name, len);
        n += len;
    }
    names[n] = '\0';
    return names;
}
