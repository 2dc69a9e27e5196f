/*
 * headers: the `headers` filter (SPEC 4). Sets, adds and removes request
 * header fields on the way to the upstream and response header fields on the
 * way back, with ${var} templates (remote_addr, request_id, consumer, host,
 * route, client_subject) in the values.
 *
 * Everything is parsed in create(): names are checked to be tokens, values
 * are split into literal pieces and variable ids, so the request path only
 * concatenates. A value without variables is used as is (no allocation);
 * one with variables is expanded into the exchange's arena.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "conf/config.h"
#include "core/exchange.h"
#include "core/filter.h"
#include "base/header.h"
#include "base/slice.h"

/* One piece of a template: literal text when var < 0, else the variable `var`. */
struct template_part {
    struct slice text;
    int var;
};

struct template
{
    char *source; /* the option string, malloc'd; literal parts point into it */
    size_t source_len;
    struct template_part *parts; /* NULL when the value has no variables */
    size_t num_parts;
};

struct header_op {
    char *name; /* malloc'd, as written */
    size_t name_len;
    struct template value; /* unused for remove */
};

struct op_list {
    struct header_op *ops;
    size_t count;
};

/* The three operations of one direction, applied in this order. */
struct header_changes {
    struct op_list remove;
    struct op_list set;
    struct op_list add;
};

struct headers_filter {
    struct header_changes request;
    struct header_changes response;
};

/* Variable names in the order of enum exchange_var, for error messages. */
static const char valid_vars[] = "remote_addr, request_id, consumer, host, route, client_subject";

/* CR, LF and NUL would split or truncate the header field (RFC 9110 5.5). */
static bool is_bad_value_char(char c)
{
    return c == '\r' || c == '\n' || c == '\0';
}

static bool is_var_start(char c)
{
    return c >= 'a' && c <= 'z';
}

static bool is_var_char(char c)
{
    return is_var_start(c) || (c >= '0' && c <= '9') || c == '_';
}

/*
 * Splits `t->source` into parts. "${name}" with a lower-case name is a
 * request variable (SPEC 2: upper-case ones were environment variables,
 * replaced when the file was loaded); anything else, "$" included, is
 * literal. Returns 0, or -1 after reporting an unknown variable or a bad
 * character under `subpath`.
 */
static int template_parse(struct template *t, struct config_error *err, const char *subpath)
{
    const char *s = t->source;
    size_t len = t->source_len;
    size_t max_parts = 1;
    int rc = 0;

    for (size_t i = 0; i < len; i++) {
        if (is_bad_value_char(s[i])) {
            config_error_add(err, subpath, "header values may not contain CR, LF or NUL");
            return -1;
        }
        if (s[i] == '$')
            max_parts += 2;
    }
    struct template_part *parts = calloc(max_parts, sizeof(*parts));
    if (!parts) {
        config_error_add(err, subpath, "out of memory");
        return -1;
    }
    size_t n = 0, lit = 0, i = 0;
    bool has_vars = false;
    while (i < len) {
        size_t end = i + 2;
        if (s[i] != '$' || i + 1 >= len || s[i + 1] != '{' || end >= len || !is_var_start(s[end])) {
            i++;
            continue;
        }
        while (end < len && is_var_char(s[end]))
            end++;
        if (end >= len || s[end] != '}') {
            i++;
            continue;
        }
        struct slice name = slice_make(s + i + 2, end - i - 2);
        int var = exchange_var_lookup(name);
        if (var < 0) {
            config_error_add(err, subpath, "unknown variable ${%.*s} (valid: %s)", (int)name.len,
                             name.base, valid_vars);
            rc = -1;
        }
        if (i > lit)
            parts[n++] = (struct template_part){slice_make(s + lit, i - lit), -1};
        parts[n++] = (struct template_part){slice_make("", 0), var};
        has_vars = true;
        i = lit = end + 1;
    }
    if (rc < 0 || !has_vars) {
        free(parts);
        return rc;
    }
    if (len > lit)
        parts[n++] = (struct template_part){slice_make(s + lit, len - lit), -1};
    t->parts = parts;
    t->num_parts = n;
    return 0;
}

/* Copies `v` without CR, LF and NUL when it holds any (a consumer taken from a token may). */
static struct slice clean_value(struct arena *a, struct slice v)
{
    size_t i = 0;
    while (i < v.len && !is_bad_value_char(v.base[i]))
        i++;
    if (i == v.len)
        return v;
    char *buf = arena_alloc(a, v.len + 1);
    size_t n = 0;
    for (i = 0; i < v.len; i++)
        if (!is_bad_value_char(v.base[i]))
            buf[n++] = v.base[i];
    buf[n] = '\0';
    return slice_make(buf, n);
}

static struct slice template_expand(const struct template *t, struct exchange *x)
{
    if (!t->parts)
        return slice_make(t->source, t->source_len);
    struct slice small[16];
    struct slice *pieces = small;
    if (t->num_parts > sizeof(small) / sizeof(small[0]))
        pieces = arena_alloc(x->arena, t->num_parts * sizeof(*pieces));
    for (size_t i = 0; i < t->num_parts; i++) {
        const struct template_part *p = &t->parts[i];
        pieces[i] = p->var < 0 ? p->text
                               : clean_value(x->arena, exchange_var(x, (enum exchange_var)p->var));
    }
    return arena_concat(x->arena, pieces, t->num_parts);
}

static void free_ops(struct op_list *l)
{
    for (size_t i = 0; i < l->count; i++) {
        free(l->ops[i].name);
        free(l->ops[i].value.source);
        free(l->ops[i].value.parts);
    }
    free(l->ops);
    l->ops = NULL;
    l->count = 0;
}

/* Instances are const while shared; destroy owns the last reference, so it may free. */
static void headers_destroy(const void *instance)
{
    struct headers_filter *f = (struct headers_filter *)instance;
    if (!f)
        return;
    struct header_changes *dirs[] = {&f->request, &f->response};
    for (size_t i = 0; i < 2; i++) {
        free_ops(&dirs[i]->remove);
        free_ops(&dirs[i]->set);
        free_ops(&dirs[i]->add);
    }
    free(f);
}

/*
 * Checks a header name and copies it into op. The framing fields are the
 * gateway's business: changing them here would desynchronise the message
 * from its body (request smuggling), so they are refused.
 */
static int op_name(struct header_op *op, const char *name, struct config_error *err,
                   const char *subpath)
{
    size_t len = strlen(name);
    if (!config_is_token(name, len)) {
        config_error_add(err, subpath, "\"%s\" is not a valid header name (RFC 9110 token)", name);
        return -1;
    }
    if (strcasecmp(name, "content-length") == 0 || strcasecmp(name, "transfer-encoding") == 0) {
        config_error_add(err, subpath, "%s is managed by the gateway and cannot be changed", name);
        return -1;
    }
    op->name = strdup(name);
    op->name_len = len;
    if (!op->name) {
        config_error_add(err, subpath, "out of memory");
        return -1;
    }
    return 0;
}

/* Parses "set" or "add": an object of name -> template string. */
static int parse_values(struct op_list *l, const json_t *obj, struct config_error *err,
                        const char *prefix)
{
    char step[256], sub[512];
    if (!json_is_object(obj)) {
        config_error_add(err, prefix, "must be an object of header name to value");
        return -1;
    }
    l->ops = calloc(json_object_size(obj) + 1, sizeof(*l->ops));
    if (!l->ops) {
        config_error_add(err, prefix, "out of memory");
        return -1;
    }
    int rc = 0;
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)obj, name, value)
    {
        config_path_member(step, sizeof(step), name);
        snprintf(sub, sizeof(sub), "%s%s", prefix, step);
        if (!json_is_string(value)) {
            config_error_add(err, sub, "must be a string");
            rc = -1;
            continue;
        }
        struct header_op *op = &l->ops[l->count++];
        if (op_name(op, name, err, sub) < 0) {
            rc = -1;
            continue;
        }
        op->value.source_len = json_string_length(value);
        op->value.source = malloc(op->value.source_len + 1);
        if (!op->value.source) {
            config_error_add(err, sub, "out of memory");
            rc = -1;
            continue;
        }
        memcpy(op->value.source, json_string_value(value), op->value.source_len + 1);
        if (template_parse(&op->value, err, sub) < 0)
            rc = -1;
    }
    return rc;
}

/* Parses "remove": an array of names. */
static int parse_remove(struct op_list *l, const json_t *arr, struct config_error *err,
                        const char *prefix)
{
    char sub[512];
    if (!json_is_array(arr)) {
        config_error_add(err, prefix, "must be an array of header names");
        return -1;
    }
    l->ops = calloc(json_array_size(arr) + 1, sizeof(*l->ops));
    if (!l->ops) {
        config_error_add(err, prefix, "out of memory");
        return -1;
    }
    int rc = 0;
    size_t i;
    json_t *name;
    json_array_foreach(arr, i, name)
    {
        snprintf(sub, sizeof(sub), "%s[%zu]", prefix, i);
        if (!json_is_string(name)) {
            config_error_add(err, sub, "must be a header name (a string)");
            rc = -1;
            continue;
        }
        if (op_name(&l->ops[l->count++], json_string_value(name), err, sub) < 0)
            rc = -1;
    }
    return rc;
}

static int parse_changes(struct header_changes *c, const json_t *obj, struct config_error *err,
                         const char *prefix)
{
    static const char *const keys[] = {"set", "add", "remove", NULL};
    char sub[64]; /* ".response.remove" at most */
    if (!obj)
        return 0;
    if (!json_is_object(obj)) {
        config_error_add(err, prefix, "must be an object with \"set\", \"add\" and/or \"remove\"");
        return -1;
    }
    /* config_check_keys reports at err->path, so point it at this object first. */
    size_t mark = config_path_push(err, prefix);
    int rc = config_check_keys(err, obj, keys) ? -1 : 0;
    config_path_pop(err, mark);

    const json_t *v;
    snprintf(sub, sizeof(sub), "%s.set", prefix);
    if ((v = json_object_get(obj, "set")) && parse_values(&c->set, v, err, sub) < 0)
        rc = -1;
    snprintf(sub, sizeof(sub), "%s.add", prefix);
    if ((v = json_object_get(obj, "add")) && parse_values(&c->add, v, err, sub) < 0)
        rc = -1;
    snprintf(sub, sizeof(sub), "%s.remove", prefix);
    if ((v = json_object_get(obj, "remove")) && parse_remove(&c->remove, v, err, sub) < 0)
        rc = -1;
    return rc;
}

static const void *headers_create(const json_t *options, struct config_error *err)
{
    static const char *const keys[] = {"type", "request", "response", NULL};
    struct headers_filter *f = calloc(1, sizeof(*f));
    if (!f) {
        config_error_add(err, "", "out of memory");
        return NULL;
    }
    int rc = config_check_keys(err, options, keys) ? -1 : 0;
    if (parse_changes(&f->request, json_object_get(options, "request"), err, ".request") < 0)
        rc = -1;
    if (parse_changes(&f->response, json_object_get(options, "response"), err, ".response") < 0)
        rc = -1;
    if (rc < 0) {
        headers_destroy(f);
        return NULL;
    }
    return f;
}

/* RFC 9110 allows repeated fields; "set" replaces them all, "add" appends one more. */
static void apply(const struct header_changes *c, struct exchange *x, struct header_list *l)
{
    for (size_t i = 0; i < c->remove.count; i++) {
        const struct header_op *op = &c->remove.ops[i];
        header_remove(l, slice_make(op->name, op->name_len));
    }
    for (size_t i = 0; i < c->set.count; i++) {
        const struct header_op *op = &c->set.ops[i];
        header_set(l, slice_make(op->name, op->name_len), template_expand(&op->value, x));
    }
    for (size_t i = 0; i < c->add.count; i++) {
        const struct header_op *op = &c->add.ops[i];
        header_add(l, slice_make(op->name, op->name_len), template_expand(&op->value, x));
    }
}

static enum filter_verdict headers_on_request(const void *instance, void *context,
                                              struct exchange *x, void *state)
{
    const struct headers_filter *f = instance;
    apply(&f->request, x, &x->req_headers);
    return FILTER_CONTINUE;
}

static void headers_on_response(const void *instance, void *context, struct exchange *x,
                                void *state)
{
    const struct headers_filter *f = instance;
    apply(&f->response, x, &x->resp_headers);
}

const struct filter_type filter_headers = {
    .name = "headers",
    .state_size = 0,
    .create = headers_create,
    .destroy = headers_destroy,
    .on_request = headers_on_request,
    .on_response = headers_on_response,
};
