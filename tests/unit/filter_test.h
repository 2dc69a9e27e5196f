/*
 * filter_test: what the filter unit tests share. A filter's create() run on
 * a JSON text at a given config path, and a look for an error message, so
 * each test_<filter>.c states only its own cases.
 */
#ifndef SLUICE_FILTER_TEST_H
#define SLUICE_FILTER_TEST_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "conf/config.h"
#include "core/filter.h"
#include "test.h"

/*
 * Runs `type`'s create() on the options `json`, as if written at config path
 * `path` of "sluice.json" in folder `dir` (NULL: none). `err` is cleared
 * first and holds what create() reported; each message is printed as a
 * comment. Returns the instance or NULL.
 */
static inline const void *filter_create_json(const struct filter_type *type, const char *json,
                                             const char *path, const char *dir,
                                             struct config_error *err)
{
    json_error_t jerr;
    json_t *options = json_loads(json, JSON_ALLOW_NUL, &jerr); /* NUL: filters must refuse it */
    ok(options != NULL, "test JSON: %s", jerr.text);
    if (!options)
        return NULL;
    config_error_clear(err);
    err->file = "sluice.json";
    err->dir = dir;
    snprintf(err->path, sizeof(err->path), "%s", path);
    const void *f = type->create(options, err);
    json_decref(options);
    for (size_t i = 0; i < err->count; i++)
        printf("# %s\n", err->messages[i]);
    return f;
}

/* Whether one of the messages in `err` contains `text`. */
static inline bool config_error_has(const struct config_error *err, const char *text)
{
    for (size_t i = 0; i < err->count; i++)
        if (strstr(err->messages[i], text))
            return true;
    return false;
}

#endif
