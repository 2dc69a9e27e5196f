/*
 * config_error: configuration errors by JSON path (SPEC 2, SPEC 7), and the
 * typed getters every section of the loader and every filter's create() use
 * to read an options object.
 *
 * Owns: the messages collected in a struct config_error (malloc'd, freed by
 * config_error_clear()). Promises: each message reads "FILE: PATH: text",
 * where PATH is the JSON path of the offending value; errors are collected,
 * never fatal, so one run lists every error of a file. A getter that finds
 * a wrong value reports it at the key's path and tells the caller, so the
 * caller keeps its default and goes on.
 *
 * Thread: the main thread while loading; a struct config_error is never
 * shared. Nothing here calls back.
 */
#ifndef SLUICE_CONFIG_ERROR_H
#define SLUICE_CONFIG_ERROR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/*
 * Errors found while loading. `path` is the JSON path of the object being
 * compiled (e.g. "routes[2].filters[0]"); config_error_add() appends a
 * sub-path to it. `dir` is the config file's folder: relative file names in
 * options resolve against it (SPEC 7).
 */
struct config_error {
    const char *file; /* as given on the command line, for messages */
    const char *dir;
    /*
     * When set, every file name in the options resolves inside this folder
     * by its last component ("keys/a.pem" and "/etc/a.pem" both name
     * ROOT/a.pem), so a load reads no other file: the config fuzzer's
     * sandbox. NULL (the default): names resolve against `dir`.
     */
    const char *file_root;
    char path[512];
    char **messages; /* each "FILE: PATH: text", malloc'd */
    size_t count;
    size_t cap;
    /*
     * Paths of string values that named an unset environment variable: a
     * later error at such a path (or under it) only repeats that one, so it
     * is not recorded (config_error_mute()).
     */
    char **muted;
    size_t num_muted;
};

/*
 * Records "FILE: PATH<subpath>: <message>". `subpath` is appended to the
 * current path as is (".rate", "[0]", "" for the object itself); NULL is "".
 */
void config_error_add(struct config_error *err, const char *subpath, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records an error on member `key` of the object at err->path, e.g. "routes[0].upstream". */
void config_key_error(struct config_error *err, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records a message that has no JSON path (syntax errors, missing file). */
void config_error_raw(struct config_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * From now on, drops errors at the current path err->path or below it,
 * because they would only follow from the error just reported there (an
 * unset environment variable leaves the value empty).
 */
void config_error_mute(struct config_error *err);

/* Frees every message and muted path and empties `err` (file and dir stay). */
void config_error_clear(struct config_error *err);

/*
 * Writes the JSON-path step for member `key` (SPEC 7): ".key" for a plain
 * identifier, else ["key"] with '"', '\\' and control characters escaped.
 * The result is truncated to `cap` bytes, NUL included.
 */
void config_path_member(char *out, size_t cap, const char *key);

/*
 * Appends a step to err->path so that errors below name it: `step` as
 * written (".tls", "[3]"), member `key` (quoted when needed), or index `i`.
 * Each returns the previous length, to give back to config_path_pop().
 * A path that would overflow err->path is truncated, never overrun.
 */
size_t config_path_push(struct config_error *err, const char *step);
size_t config_path_push_key(struct config_error *err, const char *key);
size_t config_path_push_index(struct config_error *err, size_t i);

/* Restores err->path to the length a push returned. */
void config_path_pop(struct config_error *err, size_t len);

/*
 * Reports every key of `obj` not in the NULL-terminated `allowed` list, with
 * a "did you mean" for a near miss; keys starting with '_' are comments.
 * config_check_keys() is for a filter's options and also accepts "type",
 * the key that chose the filter; config_check_keys_strict() accepts only
 * `allowed`. Both return the number of unknown keys.
 */
int config_check_keys(struct config_error *err, const json_t *obj, const char *const *allowed);
int config_check_keys_strict(struct config_error *err, const json_t *obj,
                             const char *const *allowed);

/* Names the JSON type of `v` for messages: "an object", "a string", "null"... */
const char *config_json_kind(const json_t *v);

/*
 * The typed getters read obj[key]. An absent key leaves *out alone (the
 * caller has set the default) and returns true; a wrong value is reported at
 * the key's path and returns false, *out unchanged.
 * config_get_llong: an integer in [min, max]. config_get_int: an integer in
 * [min, INT_MAX]. config_get_bool: true or false.
 */
bool config_get_llong(struct config_error *err, const json_t *obj, const char *key, long long min,
                      long long max, long long *out);
bool config_get_int(struct config_error *err, const json_t *obj, const char *key, long long min,
                    int *out);
bool config_get_bool(struct config_error *err, const json_t *obj, const char *key, bool *out);

/*
 * Reads obj[key] as a string without NUL characters. Returns the jansson
 * string (owned by the tree, valid while it lives) or NULL when absent or
 * wrong; `required` reports an absent key, `nonempty` an empty string.
 */
const char *config_get_string(struct config_error *err, const json_t *obj, const char *key,
                              bool required, bool nonempty);

/*
 * Checks that `v` is an object; if not, reports "must be an object, e.g.
 * <example>" at the current path (`example` may be NULL) and returns false.
 */
bool config_want_object(struct config_error *err, const json_t *v, const char *example);

/* True when s[0..len) is a non-empty RFC 9110 token (a field name, a method). */
bool config_is_token(const char *s, size_t len);

/*
 * Joins `name` to err->dir unless it is absolute (or maps it into
 * err->file_root when that is set); returns a malloc'd path (the caller
 * frees it). Aborts when out of memory, like all loading.
 */
char *config_resolve_path(const struct config_error *err, const char *name);

#endif
