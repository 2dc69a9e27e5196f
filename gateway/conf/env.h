/*
 * env: ${NAME} environment variables in the configuration's string values
 * (SPEC 2), substituted once at load time, before any section is read.
 *
 * Promises: ${NAME} and ${NAME:-default} with an upper-case NAME
 * ([A-Z_][A-Z0-9_]*) are replaced, $$ becomes $, and every other '$' is
 * literal (crypt hashes, lower-case request variables). An unset variable
 * without a default is an error at the value's JSON path; that path is then
 * muted (config_error_mute()) so that the empty value it leaves does not
 * add follow-on errors, while every other error of the file is still
 * reported in the same run.
 *
 * Thread: the main thread, while loading (reads the environment).
 */
#ifndef SLUICE_ENV_H
#define SLUICE_ENV_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "conf/config_error.h"

/*
 * Expands s[0..len) (see above). Returns a malloc'd string (length in
 * *out_len) or NULL when `s` holds no '$'. Each unset variable is reported
 * at err->path and sets *unset.
 */
char *env_expand(struct config_error *err, const char *s, size_t len, size_t *out_len, bool *unset);

/* Substitutes every string value of the tree `root` in place (keys are left as written). */
void env_substitute(struct config_error *err, json_t *root);

#endif
