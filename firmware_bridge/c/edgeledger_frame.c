/*
 * edgeledger_frame: see edgeledger_frame.h and firmware_bridge/PROTOCOL.md.
 *
 * Theory of operation. Encoding writes the raw frame at out + 2 and then COBS-encodes
 * it in place: a frame of at most 254 bytes has at most one 254-byte run without a
 * zero, so every COBS code byte lands exactly where a zero (or the byte before the
 * frame) was, and no byte has to move. Decoding runs the COBS state machine one byte
 * at a time into the caller's buffer and checks a chunk at its closing delimiter in
 * the order PROTOCOL.md section 1 gives, so that this decoder, the Python one and the
 * shared vectors agree on every fault.
 */
#include "edgeledger_frame.h"

#include <string.h>

/* --- CRC-32C ------------------------------------------------------------------------ */

uint32_t el_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        uint8_t k;
        crc ^= *p++;
        for (k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78UL & (0UL - (crc & 1UL)));
    }
    return ~crc;
}

/* --- little-endian helpers ---------------------------------------------------------- */

static void le_put(uint8_t *p, uint64_t v, uint8_t n)
{
    uint8_t i;
    for (i = 0; i < n; i++) {
        p[i] = (uint8_t)(v & 0xFF);
        v >>= 8;
    }
}

static uint64_t le_get(const uint8_t *p, uint8_t n)
{
    uint64_t v = 0;
    while (n--)
        v = (v << 8) | p[n];
    return v;
}

/* binary32 bits to binary64 bits, exactly (for targets whose double is 32 bits). */
static uint64_t widen_f32(uint32_t b)
{
    uint64_t sign = (uint64_t)(b >> 31) << 63;
    int32_t exp = (int32_t)((b >> 23) & 0xFF);
    uint64_t man = b & 0x7FFFFFUL;
    if (exp == 0xFF)
        return sign | 0x7FF0000000000000ULL | (man << 29);
    if (exp == 0) {
        if (man == 0)
            return sign;
        exp = 1;
        while (!(man & 0x800000UL)) {
            man <<= 1;
            exp--;
        }
        man &= 0x7FFFFFUL;
    }
    return sign | ((uint64_t)(exp - 127 + 1023) << 52) | (man << 29);
}

static uint64_t f64_bits(double v)
{
    if (sizeof(double) == 8) {
        uint64_t b;
        memcpy(&b, &v, 8);
        return b;
    } else {
        uint32_t b;
        float f = (float)v;
        memcpy(&b, &f, 4);
        return widen_f32(b);
    }
}

/* --- values ------------------------------------------------------------------------- */

el_value el_int32(int32_t v) { el_value x; memset(&x, 0, sizeof x); x.vtype = EL_INT32; x.as.i32 = v; return x; }
el_value el_int64(int64_t v) { el_value x; memset(&x, 0, sizeof x); x.vtype = EL_INT64; x.as.i64 = v; return x; }
el_value el_float32(float v) { el_value x; memset(&x, 0, sizeof x); x.vtype = EL_FLOAT32; x.as.f32 = v; return x; }
el_value el_float64(double v) { el_value x; memset(&x, 0, sizeof x); x.vtype = EL_FLOAT64; x.as.f64 = v; return x; }
el_value el_bool(int v) { el_value x; memset(&x, 0, sizeof x); x.vtype = EL_BOOL; x.as.b = v ? 1 : 0; return x; }

el_value el_text(const char *s)
{
    el_value x;
    size_t n = s ? strlen(s) : 0;
    memset(&x, 0, sizeof x);
    x.vtype = EL_TEXT;
    x.as.text.p = s;
    x.as.text.len = (uint8_t)(n > 255 ? 255 : n);
    return x;
}

/* --- checks shared by the encoder and the parser ------------------------------------ */

static int is_alnum(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int valid_id(const uint8_t *p, size_t n)
{
    size_t i;
    if (n < 1 || n > EL_ID_MAX || !is_alnum(p[0]))
        return 0;
    for (i = 1; i < n; i++)
        if (!is_alnum(p[i]) && p[i] != '.' && p[i] != '_' && p[i] != '-')
            return 0;
    return 1;
}

static int valid_printable(const uint8_t *p, size_t n, size_t lo, size_t hi)
{
    size_t i;
    if (n < lo || n > hi)
        return 0;
    for (i = 0; i < n; i++)
        if (p[i] < 0x21 || p[i] > 0x7E)
            return 0;
    return 1;
}

static int valid_utf8(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i], lo = 0x80, hi = 0xBF;
        size_t k, more;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) more = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else return 0;
        if (more > n - i - 1)
            return 0;
        for (k = 1; k <= more; k++) {
            uint8_t b = p[i + k];
            if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF))
                return 0;
        }
        i += more + 1;
    }
    return 1;
}

static int valid_vtype(uint8_t t) { return t >= EL_INT32 && t <= EL_TEXT; }

/* --- the frame writer --------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t cap, len;
    int bad;
} writer;

static void put(writer *w, const void *src, size_t n)
{
    if (w->bad || n > w->cap - w->len) {
        w->bad = 1;
        return;
    }
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void put_u8(writer *w, uint8_t v) { put(w, &v, 1); }

static void put_le(writer *w, uint64_t v, uint8_t n)
{
    uint8_t b[8];
    le_put(b, v, n);
    put(w, b, n);
}

static void put_str(writer *w, const char *s, size_t n)
{
    if (n > 255) {
        w->bad = 1;
        return;
    }
    put_u8(w, (uint8_t)n);
    put(w, s, n);
}

static void put_id(writer *w, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (!valid_id((const uint8_t *)s, n))
        w->bad = 1;
    else
        put_str(w, s, n);
}

static void put_unit(writer *w, const char *s, size_t lo, size_t hi)
{
    size_t n = s ? strlen(s) : 0;
    if (!valid_printable((const uint8_t *)(s ? s : ""), n, lo, hi))
        w->bad = 1;
    else
        put_str(w, s ? s : "", n);
}

static int begin(writer *w, uint8_t *out, size_t cap, uint8_t type, uint16_t seq)
{
    w->p = out + EL_RAW_OFFSET;
    w->len = 0;
    w->bad = out == NULL || cap < EL_FRAME_MIN + 3;
    w->cap = w->bad ? 0 : (cap - 3 < EL_FRAME_MAX ? cap - 3 : EL_FRAME_MAX);
    put_u8(w, EL_VERSION);
    put_u8(w, type);
    put_le(w, seq, 2);
    return !w->bad;
}

static size_t finish(writer *w)
{
    if (!w->bad && w->len + 4 <= w->cap)
        put_le(w, el_crc32c(0, w->p, w->len), 4);
    else
        w->bad = 1;
    return w->bad ? 0 : w->len;
}

static void put_value(writer *w, const el_value *v)
{
    uint32_t b32;
    switch (v->vtype) {
    case EL_INT32: put_le(w, (uint32_t)v->as.i32, 4); break;
    case EL_INT64: put_le(w, (uint64_t)v->as.i64, 8); break;
    case EL_FLOAT32:
        memcpy(&b32, &v->as.f32, 4);
        if ((b32 & 0x7F800000UL) == 0x7F800000UL) w->bad = 1;
        put_le(w, b32, 4);
        break;
    case EL_FLOAT64: {
        uint64_t b64 = f64_bits(v->as.f64);
        if ((b64 & 0x7FF0000000000000ULL) == 0x7FF0000000000000ULL) w->bad = 1;
        put_le(w, b64, 8);
        break;
    }
    case EL_BOOL: put_u8(w, v->as.b ? 1 : 0); break;
    case EL_TEXT:
        if (v->as.text.len > EL_TEXT_MAX
            || (v->as.text.len && !valid_utf8((const uint8_t *)v->as.text.p, v->as.text.len)))
            w->bad = 1;
        else
            put_str(w, v->as.text.p, v->as.text.len);
        break;
    default: w->bad = 1;
    }
}

size_t el_build_reading(uint8_t *out, size_t cap, uint16_t seq, uint8_t flags,
                        const char *sensor, const char *metric, const char *unit,
                        const el_value *value)
{
    writer w;
    if (!begin(&w, out, cap, EL_READING, seq) || value == NULL || (flags & 0xFE))
        return 0;
    put_u8(&w, flags);
    put_id(&w, sensor);
    put_id(&w, metric);
    put_unit(&w, unit, 0, EL_UNIT_MAX);
    put_u8(&w, value->vtype);
    put_value(&w, value);
    return finish(&w);
}

size_t el_build_hello(uint8_t *out, size_t cap, uint16_t seq, const char *firmware,
                      uint8_t part, uint8_t parts, const el_channel *channels,
                      uint8_t count)
{
    writer w;
    uint8_t i;
    if (!begin(&w, out, cap, EL_HELLO, seq) || parts == 0 || part >= parts
        || (count && channels == NULL))
        return 0;
    put_unit(&w, firmware, 1, EL_FIRMWARE_MAX);
    put_u8(&w, part);
    put_u8(&w, parts);
    put_u8(&w, count);
    for (i = 0; i < count; i++) {
        put_id(&w, channels[i].sensor);
        put_id(&w, channels[i].metric);
        put_unit(&w, channels[i].unit, 0, EL_UNIT_MAX);
        if (!valid_vtype(channels[i].vtype))
            w.bad = 1;
        put_u8(&w, channels[i].vtype);
    }
    return finish(&w);
}

size_t el_build_attest(uint8_t *out, size_t cap, uint16_t seq, uint8_t alg,
                       uint16_t signed_seq, const uint8_t *signature, uint8_t sig_len)
{
    writer w;
    if (!begin(&w, out, cap, EL_ATTEST, seq) || alg != EL_ALG_ED25519
        || sig_len != EL_ED25519_SIG || signature == NULL)
        return 0;
    put_u8(&w, alg);
    put_le(&w, signed_seq, 2);
    put_u8(&w, sig_len);
    put(&w, signature, sig_len);
    return finish(&w);
}

/* --- COBS ---------------------------------------------------------------------------- */

size_t el_seal(uint8_t *out, size_t cap, size_t raw_len)
{
    size_t i, code_at = 1;
    if (out == NULL || raw_len < EL_FRAME_MIN || raw_len > EL_FRAME_MAX || cap < raw_len + 3)
        return 0;
    /* out[2 ..] holds the frame; out[1] becomes the first code byte. Each zero in the
     * frame becomes the code of the block after it; a frame of <= 254 bytes needs
     * no other code byte. */
    out[0] = 0;
    for (i = 2; i < raw_len + 2; i++) {
        if (out[i] == 0) {
            out[code_at] = (uint8_t)(i - code_at);
            code_at = i;
        }
    }
    out[code_at] = (uint8_t)(i - code_at);
    out[raw_len + 2] = 0;
    return raw_len + 3;
}

size_t el_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    size_t o = 1, code_at = 0, i;
    uint8_t code = 1;
    if (out == NULL || cap == 0)
        return 0;
    for (i = 0; i < n; i++) {
        if (in[i] != 0) {
            if (o >= cap)
                return 0;
            out[o++] = in[i];
            if (++code != 0xFF || i + 1 == n)
                continue;   /* a full block at the very end needs no new one */
        }
        out[code_at] = code;
        code = 1;
        code_at = o++;
        if (code_at >= cap)
            return 0;
    }
    out[code_at] = code;
    return o;
}

#define ENCODE(build_call)                                      \
    do {                                                        \
        size_t raw = build_call;                                \
        return raw ? el_seal(out, cap, raw) : 0;                \
    } while (0)

size_t el_encode_reading(uint8_t *out, size_t cap, uint16_t seq, uint8_t flags,
                         const char *sensor, const char *metric, const char *unit,
                         const el_value *value)
{
    ENCODE(el_build_reading(out, cap, seq, flags, sensor, metric, unit, value));
}

size_t el_encode_hello(uint8_t *out, size_t cap, uint16_t seq, const char *firmware,
                       uint8_t part, uint8_t parts, const el_channel *channels,
                       uint8_t count)
{
    ENCODE(el_build_hello(out, cap, seq, firmware, part, parts, channels, count));
}

size_t el_encode_attest(uint8_t *out, size_t cap, uint16_t seq, uint8_t alg,
                        uint16_t signed_seq, const uint8_t *signature, uint8_t sig_len)
{
    ENCODE(el_build_attest(out, cap, seq, alg, signed_seq, signature, sig_len));
}

/* --- the incremental decoder ------------------------------------------------------- */

int el_decoder_init(el_decoder *d, uint8_t *buf, size_t cap)
{
    memset(d, 0, sizeof *d);
    d->buf = buf;
    return buf == NULL || cap < EL_FRAME_MAX ? EL_ERR_ARG : 0;
}

static void take(el_decoder *d, uint8_t b)
{
    if (d->len < EL_FRAME_MAX)
        d->buf[d->len++] = b;
    else
        d->too_long = 1;
}

static el_status close_chunk(el_decoder *d)
{
    d->number = d->chunks++;
    d->offset = d->chunk_offset;
    if (d->left != 0)
        return EL_ERR_COBS;
    if (d->too_long)
        return EL_ERR_OVERLONG;
    if (d->len < EL_FRAME_MIN)
        return EL_ERR_SHORT;
    if (el_crc32c(0, d->buf, d->len - 4) != (uint32_t)le_get(d->buf + d->len - 4, 4))
        return EL_ERR_CRC;
    return EL_FRAME_OK;
}

el_status el_decoder_feed(el_decoder *d, uint8_t byte)
{
    uint32_t at = d->pos++;
    el_status s = EL_NONE;
    if (byte == 0) {
        if (d->enc_len && !d->discarding)
            s = close_chunk(d);
        d->enc_len = 0;
        d->discarding = 0;
        return s;
    }
    if (d->discarding)
        return EL_NONE;
    if (d->enc_len == 0) {
        d->chunk_offset = at;
        d->len = 0;
        d->left = 0;
        d->code = 0;
        d->too_long = 0;
    }
    if (++d->enc_len > EL_CHUNK_MAX) {
        d->discarding = 1;
        d->number = d->chunks++;
        d->offset = d->chunk_offset;
        return EL_ERR_OVERLONG;
    }
    if (d->left == 0) {
        if (d->enc_len > 1 && d->code != 0xFF)
            take(d, 0);
        d->code = byte;
        d->left = (uint8_t)(byte - 1);
    } else {
        take(d, byte);
        d->left--;
    }
    return EL_NONE;
}

/* --- parsing ------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t len, i;
    int bad;
} cursor;

static const uint8_t *get(cursor *c, size_t n)
{
    const uint8_t *at = c->p + c->i;
    if (c->bad || n > c->len - c->i) {
        c->bad = 1;
        return NULL;
    }
    c->i += n;
    return at;
}

static uint8_t get_u8(cursor *c)
{
    const uint8_t *p = get(c, 1);
    return p ? *p : 0;
}

static el_str get_str(cursor *c)
{
    el_str s;
    s.len = get_u8(c);
    s.p = get(c, s.len);
    if (s.p == NULL)
        s.len = 0;
    return s;
}

static el_str get_id(cursor *c)
{
    el_str s = get_str(c);
    if (!c->bad && !valid_id(s.p, s.len))
        c->bad = 1;
    return s;
}

static el_str get_unit(cursor *c, size_t lo, size_t hi)
{
    el_str s = get_str(c);
    if (!c->bad && !valid_printable(s.p, s.len, lo, hi))
        c->bad = 1;
    return s;
}

static void get_value(cursor *c, el_value *v)
{
    static const uint8_t widths[] = {0, 4, 8, 4, 8, 1};
    const uint8_t *p;
    uint8_t n;
    memset(v, 0, sizeof *v);
    v->vtype = get_u8(c);
    if (c->bad || !valid_vtype(v->vtype)) {
        c->bad = 1;
        return;
    }
    if (v->vtype == EL_TEXT) {
        el_str s = get_str(c);
        if (!c->bad && (s.len > EL_TEXT_MAX || !valid_utf8(s.p, s.len)))
            c->bad = 1;
        v->as.text.p = (const char *)s.p;
        v->as.text.len = s.len;
        return;
    }
    n = widths[v->vtype];
    p = get(c, n);
    if (p == NULL)
        return;
    memcpy(v->raw, p, n);
    switch (v->vtype) {
    case EL_INT32: v->as.i32 = (int32_t)(uint32_t)le_get(p, 4); break;
    case EL_INT64: v->as.i64 = (int64_t)le_get(p, 8); break;
    case EL_FLOAT32: {
        uint32_t b = (uint32_t)le_get(p, 4);
        if ((b & 0x7F800000UL) == 0x7F800000UL) c->bad = 1;
        memcpy(&v->as.f32, &b, 4);
        break;
    }
    case EL_FLOAT64: {
        uint64_t b = le_get(p, 8);
        if ((b & 0x7FF0000000000000ULL) == 0x7FF0000000000000ULL) c->bad = 1;
        if (sizeof(double) == 8) {
            memcpy(&v->as.f64, &b, 8);
        } else { /* narrow by truncation: a 32-bit-double target only sees raw[] exactly */
            int32_t e = (int32_t)((b >> 52) & 0x7FF) - 1023 + 127;
            uint32_t f = (uint32_t)(b >> 63) << 31;
            if (e >= 0xFF) f |= 0x7F800000UL;
            else if (e > 0) f |= ((uint32_t)e << 23) | (uint32_t)((b >> 29) & 0x7FFFFFUL);
            memcpy(&v->as.f64, &f, sizeof(double) < 4 ? sizeof(double) : 4);
        }
        break;
    }
    default:
        if (*p > 1) c->bad = 1;
        v->as.b = *p;
    }
}

static void parse_channel(cursor *c, el_channel_view *ch)
{
    ch->sensor = get_id(c);
    ch->metric = get_id(c);
    ch->unit = get_unit(c, 0, EL_UNIT_MAX);
    ch->vtype = get_u8(c);
    if (!valid_vtype(ch->vtype))
        c->bad = 1;
}

el_status el_parse(const uint8_t *frame, size_t len, el_frame *f)
{
    cursor c;
    uint8_t i;
    if (frame == NULL || f == NULL || len < EL_FRAME_MIN)
        return EL_ERR_ARG;
    memset(f, 0, sizeof *f);
    f->version = frame[0];
    f->type = frame[1];
    f->seq = (uint16_t)le_get(frame + 2, 2);
    if (f->version != EL_VERSION)
        return EL_ERR_VERSION;
    c.p = frame + 4;
    c.len = len - 8;
    c.i = 0;
    c.bad = 0;
    switch (f->type) {
    case EL_READING:
        f->u.reading.flags = get_u8(&c);
        if (f->u.reading.flags & 0xFE)
            c.bad = 1;
        f->u.reading.sensor = get_id(&c);
        f->u.reading.metric = get_id(&c);
        f->u.reading.unit = get_unit(&c, 0, EL_UNIT_MAX);
        get_value(&c, &f->u.reading.value);
        break;
    case EL_HELLO:
        f->u.hello.firmware = get_unit(&c, 1, EL_FIRMWARE_MAX);
        f->u.hello.part = get_u8(&c);
        f->u.hello.parts = get_u8(&c);
        f->u.hello.count = get_u8(&c);
        if (f->u.hello.parts == 0 || f->u.hello.part >= f->u.hello.parts)
            c.bad = 1;
        f->u.hello.channels = c.p + c.i;
        for (i = 0; i < f->u.hello.count && !c.bad; i++) {
            el_channel_view ch;
            parse_channel(&c, &ch);
        }
        f->u.hello.channels_len = (size_t)(c.p + c.i - f->u.hello.channels);
        break;
    case EL_ATTEST:
        f->u.attest.alg = get_u8(&c);
        f->u.attest.signed_seq = (uint16_t)get_u8(&c);
        f->u.attest.signed_seq |= (uint16_t)(get_u8(&c) << 8);
        f->u.attest.signature = get_str(&c);
        if (f->u.attest.alg != EL_ALG_ED25519 || f->u.attest.signature.len != EL_ED25519_SIG)
            c.bad = 1;
        break;
    default:
        return EL_ERR_TYPE;
    }
    return c.bad || c.i != c.len ? EL_ERR_BODY : EL_FRAME_OK;
}

int el_hello_channel(const el_frame *f, uint8_t i, el_channel_view *out)
{
    cursor c;
    uint8_t k;
    if (f == NULL || out == NULL || f->type != EL_HELLO || i >= f->u.hello.count)
        return -1;
    c.p = f->u.hello.channels;
    c.len = f->u.hello.channels_len;
    c.i = 0;
    c.bad = 0;
    for (k = 0; k <= i; k++)
        parse_channel(&c, out);
    return c.bad ? -1 : 0;
}

const char *el_status_name(el_status s)
{
    switch (s) {
    case EL_NONE: return "none";
    case EL_FRAME_OK: return "ok";
    case EL_ERR_OVERLONG: return "overlong";
    case EL_ERR_COBS: return "cobs";
    case EL_ERR_SHORT: return "short";
    case EL_ERR_CRC: return "crc";
    case EL_ERR_VERSION: return "version";
    case EL_ERR_TYPE: return "type";
    case EL_ERR_BODY: return "body";
    case EL_ERR_ARG: return "arg";
    }
    return "?";
}
