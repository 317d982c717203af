/* JSON writer: pretty-printed with two-space indents; strings escaped per RFC 8259. */
#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put(json_out *j, const char *s, size_t n)
{
    if (j->failed) return;
    if (j->len + n + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 1024;
        while (j->len + n + 1 > cap) cap *= 2;
        char *b = realloc(j->buf, cap);
        if (!b) {
            j->failed = 1;
            return;
        }
        j->buf = b;
        j->cap = cap;
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    j->buf[j->len] = '\0';
}

static void puts_(json_out *j, const char *s) { put(j, s, strlen(s)); }

static void put_escaped(json_out *j, const char *s)
{
    puts_(j, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char tmp[8];
        if (*p == '"' || *p == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)*p;
            put(j, tmp, 2);
        } else if (*p < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", *p);
            puts_(j, tmp);
        } else {
            put(j, (const char *)p, 1);
        }
    }
    puts_(j, "\"");
}

static void item(json_out *j, const char *key)
{
    if (j->need_comma) puts_(j, ",");
    if (j->depth > 0) {
        puts_(j, "\n");
        for (int i = 0; i < j->depth; i++) puts_(j, "  ");
    }
    if (key) {
        put_escaped(j, key);
        puts_(j, ": ");
    }
    j->need_comma = 1;
}

void json_init(json_out *j) { memset(j, 0, sizeof *j); }
void json_free(json_out *j) { free(j->buf); memset(j, 0, sizeof *j); }

static void open_(json_out *j, const char *key, const char *br)
{
    item(j, key);
    puts_(j, br);
    j->depth++;
    j->need_comma = 0;
}

static void close_(json_out *j, const char *br)
{
    j->depth--;
    if (j->need_comma) {
        puts_(j, "\n");
        for (int i = 0; i < j->depth; i++) puts_(j, "  ");
    }
    puts_(j, br);
    j->need_comma = 1;
    if (j->depth == 0) puts_(j, "\n");
}

void json_begin_object(json_out *j, const char *key) { open_(j, key, "{"); }
void json_end_object(json_out *j) { close_(j, "}"); }
void json_begin_array(json_out *j, const char *key) { open_(j, key, "["); }
void json_end_array(json_out *j) { close_(j, "]"); }

void json_string(json_out *j, const char *key, const char *v)
{
    item(j, key);
    if (v) put_escaped(j, v);
    else puts_(j, "null");
}

void json_number(json_out *j, const char *key, double v)
{
    char tmp[40];
    item(j, key);
    if (!isfinite(v)) {
        puts_(j, "null");
        return;
    }
    snprintf(tmp, sizeof tmp, "%.17g", v);
    puts_(j, tmp);
}

void json_int(json_out *j, const char *key, int64_t v)
{
    char tmp[32];
    item(j, key);
    snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    puts_(j, tmp);
}

void json_bool(json_out *j, const char *key, int v)
{
    item(j, key);
    puts_(j, v ? "true" : "false");
}
