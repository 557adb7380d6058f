/*
 * One decoder outcome as one line of text, in the format of
 * c/tests/gen_vectors.py `summary`: the C tests compare these lines with the
 * shared vectors, and tools/frame_reader prints them for the Python tests.
 * Host-side only (uses stdio).
 */
#ifndef EDGELEDGER_RENDER_H
#define EDGELEDGER_RENDER_H

#include <stdio.h>
#include <string.h>

#include "edgeledger_frame.h"

typedef struct {
    char *p;
    size_t cap, len;
} el_line;

static void line_add(el_line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#include <stdarg.h>
static void line_add(el_line *l, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (l->len >= l->cap)
        return;
    va_start(ap, fmt);
    n = vsnprintf(l->p + l->len, l->cap - l->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        l->len += (size_t)n;
    if (l->len >= l->cap)
        l->len = l->cap - 1;
}

static void line_str(el_line *l, el_str s)
{
    line_add(l, "%.*s", (int)s.len, (const char *)s.p);
}

static void line_hex(el_line *l, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        line_add(l, "%02x", p[i]);
}

/* Render status s (from el_decoder_feed, then el_parse) of the chunk d last reported. */
static void el_render(char *buf, size_t cap, el_status s, const el_decoder *d, const el_frame *f)
{
    static const uint8_t widths[] = {0, 4, 8, 4, 8, 1};
    el_line l;
    uint8_t i;
    l.p = buf;
    l.cap = cap;
    l.len = 0;
    buf[0] = 0;
    line_add(&l, "frame=%lu offset=%lu ", (unsigned long)d->number, (unsigned long)d->offset);
    if (s != EL_FRAME_OK) {
        line_add(&l, "fault=%s", el_status_name(s));
        return;
    }
    line_add(&l, "%s v=%u seq=%u ", f->type == EL_READING ? "reading"
             : f->type == EL_HELLO ? "hello" : "attest", f->version, f->seq);
    if (f->type == EL_READING) {
        const el_value *v = &f->u.reading.value;
        line_add(&l, "flags=%u sensor=", f->u.reading.flags);
        line_str(&l, f->u.reading.sensor);
        line_add(&l, " metric=");
        line_str(&l, f->u.reading.metric);
        line_add(&l, " unit=");
        line_str(&l, f->u.reading.unit);
        line_add(&l, " vtype=%u value=", v->vtype);
        if (v->vtype == EL_TEXT)
            line_hex(&l, (const uint8_t *)v->as.text.p, v->as.text.len);
        else
            line_hex(&l, v->raw, widths[v->vtype]);
    } else if (f->type == EL_HELLO) {
        line_add(&l, "fw=");
        line_str(&l, f->u.hello.firmware);
        line_add(&l, " part=%u/%u ch=", f->u.hello.part, f->u.hello.parts);
        for (i = 0; i < f->u.hello.count; i++) {
            el_channel_view ch;
            if (el_hello_channel(f, i, &ch) != 0)
                break;
            line_add(&l, "%s", i ? "," : "");
            line_str(&l, ch.sensor);
            line_add(&l, "/");
            line_str(&l, ch.metric);
            line_add(&l, ":");
            line_str(&l, ch.unit);
            line_add(&l, ":%u", ch.vtype);
        }
    } else {
        line_add(&l, "alg=%u signed=%u sig=", f->u.attest.alg, f->u.attest.signed_seq);
        line_hex(&l, f->u.attest.signature.p, f->u.attest.signature.len);
    }
}

/* Feed one byte; when something is reported, render it into buf and return 1. */
static int el_feed_render(el_decoder *d, uint8_t byte, char *buf, size_t cap)
{
    el_frame f;
    el_status s = el_decoder_feed(d, byte);
    if (s == EL_NONE)
        return 0;
    if (s == EL_FRAME_OK)
        s = el_parse(d->buf, d->len, &f);
    el_render(buf, cap, s, d, &f);
    return 1;
}

#endif
