/* A small JSON writer into a growable string, for run.json. */
#ifndef BN_CLI_JSON_H
#define BN_CLI_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *buf;
    size_t len, cap;
    int depth;
    int need_comma;
    int failed; /* an allocation failed; the text is incomplete */
} json_out;

void json_init(json_out *j);
void json_free(json_out *j);
void json_begin_object(json_out *j, const char *key); /* key NULL inside arrays / at top */
void json_end_object(json_out *j);
void json_begin_array(json_out *j, const char *key);
void json_end_array(json_out *j);
void json_string(json_out *j, const char *key, const char *v);
void json_number(json_out *j, const char *key, double v); /* NaN/Inf become null */
void json_int(json_out *j, const char *key, int64_t v);
void json_bool(json_out *j, const char *key, int v);

#endif
