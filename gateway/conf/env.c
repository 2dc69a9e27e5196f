/*
 * env: ${NAME} substitution in the configuration's string values (SPEC 2).
 */
#include "conf/env.h"

#include <stdlib.h>
#include <string.h>

#include "conf/config_int.h"

static bool env_name_start(char c)
{
    return (c >= 'A' && c <= 'Z') || c == '_';
}

static bool env_name_char(char c)
{
    return env_name_start(c) || (c >= '0' && c <= '9');
}

char *env_expand(struct config_error *err, const char *s, size_t len, size_t *out_len, bool *unset)
{
    if (!memchr(s, '$', len))
        return NULL;
    struct buf b = {0};
    buf_add(&b, "", 0);
    size_t i = 0;
    while (i < len) {
        if (s[i] != '$') {
            buf_add(&b, s + i, 1);
            i++;
            continue;
        }
        if (i + 1 < len && s[i + 1] == '$') {
            buf_add(&b, "$", 1);
            i += 2;
            continue;
        }
        if (i + 2 < len && s[i + 1] == '{' && env_name_start(s[i + 2])) {
            size_t start = i + 2, end = start;
            while (end < len && env_name_char(s[end]))
                end++;
            char name[256];
            size_t nlen = end - start < sizeof name ? end - start : sizeof name - 1;
            memcpy(name, s + start, nlen);
            name[nlen] = '\0';
            if (end < len && s[end] == '}') {
                const char *value = getenv(name);
                if (value) {
                    buf_str(&b, value);
                } else {
                    *unset = true;
                    config_error_add(err, "",
                                     "environment variable %s is not set (set it, or write "
                                     "${%s:-default})",
                                     name, name);
                }
                i = end + 1;
                continue;
            }
            if (end + 1 < len && s[end] == ':' && s[end + 1] == '-') {
                const char *close = memchr(s + end + 2, '}', len - end - 2);
                if (close) {
                    const char *value = getenv(name);
                    if (value && value[0])
                        buf_str(&b, value);
                    else
                        buf_add(&b, s + end + 2, (size_t)(close - (s + end + 2)));
                    i = (size_t)(close - s) + 1;
                    continue;
                }
            }
        }
        buf_add(&b, "$", 1);
        i++;
    }
    *out_len = b.len;
    return b.data;
}

/* Walks the whole tree and substitutes every string value in place (not keys). */
static void substitute(struct config_error *err, json_t *node)
{
    if (json_is_object(node)) {
        const char *key;
        json_t *value;
        json_object_foreach(node, key, value)
        {
            size_t mark = config_path_push_key(err, key);
            substitute(err, value);
            config_path_pop(err, mark);
        }
    } else if (json_is_array(node)) {
        size_t i;
        json_t *value;
        json_array_foreach(node, i, value)
        {
            size_t mark = config_path_push_index(err, i);
            substitute(err, value);
            config_path_pop(err, mark);
        }
    } else if (json_is_string(node)) {
        size_t len = 0;
        bool unset = false;
        char *expanded =
            env_expand(err, json_string_value(node), json_string_length(node), &len, &unset);
        if (expanded)
            json_string_setn(node, expanded, len);
        free(expanded);
        if (unset)
            config_error_mute(err);
    }
}

void env_substitute(struct config_error *err, json_t *root)
{
    substitute(err, root);
}
