/*
 * registry: the one list of filter types (STYLE rule 2). Adding a filter is
 * one new file in filters/ that defines `const struct filter_type
 * filter_NAME` and one line below: FILTER_PLANNED(NAME) becomes
 * FILTER_AVAILABLE(NAME).
 */
#include <stddef.h>
#include <string.h>

#include "core/filter.h"

/*
 * Every filter type of SPEC 4, in SPEC 4's order. The order matters only
 * for listing (the names in error messages come out in this order) and is
 * fixed: keep it as in SPEC 4. Lookup is by name, so it does not affect which
 * filter runs; the order in which filters run is the order of the
 * configuration's list. A planned type is one this version does not provide
 * yet: the loader says "not available in this version" instead of "unknown".
 */
#define FILTER_TYPES(FILTER_AVAILABLE, FILTER_PLANNED)                                             \
    FILTER_AVAILABLE(api_key)                                                                      \
    FILTER_AVAILABLE(basic_auth)                                                                   \
    FILTER_AVAILABLE(jwt)                                                                          \
    FILTER_AVAILABLE(rate_limit)                                                                   \
    FILTER_AVAILABLE(rewrite)                                                                      \
    FILTER_AVAILABLE(headers)                                                                      \
    FILTER_AVAILABLE(cors)                                                                         \
    FILTER_AVAILABLE(ip_filter)                                                                    \
    FILTER_AVAILABLE(body_limit)

#define DECLARE_AVAILABLE(name) extern const struct filter_type filter_##name;
#define DECLARE_PLANNED(name)
FILTER_TYPES(DECLARE_AVAILABLE, DECLARE_PLANNED)

struct registry_entry {
    const char *name;
    const struct filter_type *type; /* NULL: planned */
};

#define ENTRY_AVAILABLE(name) {#name, &filter_##name},
#define ENTRY_PLANNED(name) {#name, NULL},
static const struct registry_entry entries[] = {FILTER_TYPES(ENTRY_AVAILABLE, ENTRY_PLANNED)};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const struct filter_type *filter_registry_find(const char *name, int *planned)
{
    if (planned)
        *planned = 0;
    if (!name)
        return NULL;
    for (size_t i = 0; i < COUNT(entries); i++) {
        if (strcmp(entries[i].name, name) != 0)
            continue;
        if (!entries[i].type && planned)
            *planned = 1;
        return entries[i].type;
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
    for (size_t i = 0; i < COUNT(entries); i++) {
        if (!entries[i].type)
            continue;
        size_t len = strlen(entries[i].name);
        if (n + len + 3 > sizeof(names))
            break;
        if (n) {
            memcpy(names + n, ", ", 2);
            n += 2;
        }
        memcpy(names + n, entries[i].name, len);
        n += len;
    }
    names[n] = '\0';
    return names;
}
