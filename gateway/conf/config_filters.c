/*
 * config_filters: a "filters" array, global or a route's (SPEC 4): each
 * entry is created by its type's create() from filters/registry.
 */
#include <stdlib.h>
#include <string.h>

#include "conf/config_int.h"
#include "core/filter.h"

void config_build_filters(struct config_error *err, const json_t *v, struct filter_instance **out,
                          size_t *count)
{
    if (!v)
        return;
    size_t mark = config_path_push(err, ".filters");
    if (!json_is_array(v)) {
        config_error_add(err, "",
                         "must be an array of filters, e.g. [{\"type\": \"headers\", "
                         "...}], not %s",
                         config_json_kind(v));
        config_path_pop(err, mark);
        return;
    }
    size_t n = json_array_size(v);
    *out = xcalloc(n, sizeof **out);
    for (size_t i = 0; i < n; i++) {
        size_t m2 = config_path_push_index(err, i);
        const json_t *f = json_array_get(v, i);
        const char *name = NULL;
        if (!json_is_object(f))
            config_error_add(err, "",
                             "must be an object with a \"type\", e.g. {\"type\": "
                             "\"headers\", ...}, not %s",
                             config_json_kind(f));
        else if (!json_object_get(f, "type"))
            config_error_add(err, ".type", "missing: every filter needs a \"type\" (available: %s)",
                             filter_registry_names());
        else
            name = config_get_string(err, f, "type", true, true);
        if (name) {
            int planned = 0;
            const struct filter_type *type = filter_registry_find(name, &planned);
            if (!type && planned) {
                config_error_add(err, ".type",
                                 "filter type \"%s\" is not available in this version", name);
            } else if (!type) {
                config_error_add(err, ".type", "unknown filter type \"%s\" (available: %s)", name,
                                 filter_registry_names());
            } else {
                /* create() may push its own steps; give it a copy and restore ours after. */
                char saved[sizeof err->path];
                memcpy(saved, err->path, sizeof saved);
                size_t before = err->count;
                const void *instance = type->create(f, err);
                memcpy(err->path, saved, sizeof saved);
                if (instance) {
                    (*out)[*count].type = type;
                    (*out)[*count].instance = instance;
                    (*count)++;
                } else if (err->count == before) {
                    config_error_add(err, "", "the %s filter could not be created", name);
                }
            }
        }
        config_path_pop(err, m2);
    }
    config_path_pop(err, mark);
}

void config_free_filters(struct filter_instance *f, size_t n)
{
    for (size_t i = n; i-- > 0;)
        if (f[i].type && f[i].type->destroy)
            f[i].type->destroy(f[i].instance);
    free(f);
}
