/* megabit C runtime: see mb_runtime.h. Bit-exact with megabit.export.integer.IntegerNQE.
 *
 *   x0      = pixel - 128                                   (int8)
 *   acc     = sum W * x        (integer 'same' conv, groups, int32)
 *   u       = (acc + o_c) >> rshift   (<< -rshift if rshift < 0), floor
 *             per-channel BSN ([I], rshift == MB_RSHIFT_PER_CHANNEL): (acc * M_c + o_c) >> rshift_c,
 *             M_c and rshift_c stored in one word: M_c << 8 | (rshift_c + 128)
 *   x_next  = clamp(u, 0, 2^act_bits - 1), then 2x2 max-pool (floor) if the layer has one
 *   logits  = W_head . sum_hw(x) + bias                     (int64)
 *   bit     = (conv1x1(x, W_code) + o_c >= 0)               (patch encoder code layer)
 *
 * Weights are decoded per output channel, just before that channel is computed,
 * into a scratch of cin/groups * k * k int8: the decoder state (K tANS states and
 * the bit reader) carries over from one channel to the next, so RAM never holds
 * more than one filter of decoded weights.
 */
#include <string.h>

#include "model.h"

#define MB_ACT_MAX ((1 << MB_ACT_BITS) - 1)

/* ---- static buffers, sized at export (see memory_map.json) ---- */
static int8_t mb_act0[MB_BUF0_BYTES];        /* ping */
static int8_t mb_act1[MB_BUF1_BYTES];        /* pong */
static int8_t mb_wbuf[MB_WSCRATCH_BYTES];    /* one decoded filter / one head row */
static int32_t mb_acc[MB_ACC_WORDS];         /* accumulator plane of one output channel */
#if MB_NUM_CLASSES > 0
static int32_t mb_sums[MB_SUMS_WORDS];       /* sum-pooled features for the head */
#endif

/* ---- weight decoder ---- */
typedef struct {
    const uint8_t *data;
    uint32_t nbytes, pos; /* bytes pulled into acc (reads past the end yield zeros) */
    uint32_t acc;         /* bit buffer, LSB-first */
    uint32_t cnt;         /* valid bits in acc */
    const mb_tans_entry *lut;
    uint32_t k, K;        /* next stream, number of streams */
    int32_t mul, sub;     /* symbol -> code: s * mul - sub */
    uint8_t coder, code_bits;
    uint16_t state[MB_MAX_STREAMS];
} mb_decoder;

static mb_decoder mb_dec;

#if MB_LUT_IN_RAM
static mb_tans_entry mb_lut_ram[MB_LUT_RAM_ENTRIES];
static uint16_t mb_lut_next[MB_MAX_ALPHABET];

/* Build the decode table from the stored frequencies (megabit.entropy.tans.build_tables). */
static void mb_build_lut(const uint16_t *f, uint32_t n, uint32_t table_log, mb_tans_entry *lut) {
    const uint32_t L = 1u << table_log, mask = L - 1u, step = (L >> 1) + (L >> 3) + 3u;
    uint32_t s, r, u, pos = 0;
    for (s = 0; s < n; s++) {
        for (r = 0; r < f[s]; r++) {
            lut[pos].symbol = (uint8_t)s;
            pos = (pos + step) & mask;
        }
        mb_lut_next[s] = f[s];
    }
    for (u = 0; u < L; u++) {
        uint32_t j = mb_lut_next[lut[u].symbol]++, hb = 0, nb;
        while ((j >> hb) > 1u) hb++; /* floor(log2 j) */
        nb = table_log - hb;
        lut[u].nb_bits = (uint8_t)nb;
        lut[u].new_state_base = (uint16_t)((j << nb) - L);
    }
}
#endif

static void mb_dec_start(const mb_layer *L) {
    uint32_t i;
    mb_dec.data = mb_weight_data + L->stream_off;
    mb_dec.nbytes = (L->stream_bits + 7u) >> 3;
    mb_dec.pos = mb_dec.acc = mb_dec.cnt = 0;
    mb_dec.coder = L->coder;
    mb_dec.code_bits = L->code_bits;
    mb_dec.mul = (L->levels & 1u) ? 1 : 2;
    mb_dec.sub = (L->levels & 1u) ? (int32_t)(L->levels / 2u) : (int32_t)L->levels - 1;
    mb_dec.k = 0;
    mb_dec.K = L->n_streams;
    if (L->coder == MB_CODER_TANS) {
#if MB_LUT_IN_RAM
        mb_build_lut(mb_freqs + L->lut_off, L->n_freqs, L->code_bits, mb_lut_ram);
        mb_dec.lut = mb_lut_ram;
#else
        mb_dec.lut = mb_luts + L->lut_off;
#endif
        for (i = 0; i < mb_dec.K; i++) mb_dec.state[i] = mb_init_states[L->state_off + i];
    }
}

/* 1 when the layer's stream was consumed exactly and every tANS state is back at 0. */
static int mb_dec_finish(const mb_layer *L) {
    uint32_t i;
    if (8u * mb_dec.pos - mb_dec.cnt != L->stream_bits) return 0;
    if (L->coder == MB_CODER_TANS)
        for (i = 0; i < mb_dec.K; i++)
            if (mb_dec.state[i] != 0) return 0;
    return 1;
}

/* Refill to >= 25 valid bits (every read is <= 15 bits). */
#define MB_REFILL(acc, cnt, pos)                                                         \
    do {                                                                                 \
        while ((cnt) <= 24u) {                                                           \
            (acc) |= (uint32_t)((pos) < mb_dec.nbytes ? mb_dec.data[(pos)] : 0u) << (cnt); \
            (pos)++;                                                                     \
            (cnt) += 8u;                                                                 \
        }                                                                                \
    } while (0)

/* Decode the next n weights (integer codes) into out. */
static void mb_decode(int8_t *out, uint32_t n) {
    uint32_t acc = mb_dec.acc, cnt = mb_dec.cnt, pos = mb_dec.pos, i;
    const int32_t mul = mb_dec.mul, sub = mb_dec.sub;
    if (mb_dec.coder == MB_CODER_RAW) {
        const uint32_t b = mb_dec.code_bits, mask = (1u << b) - 1u;
        for (i = 0; i < n; i++) {
            if (cnt < b) MB_REFILL(acc, cnt, pos);
            out[i] = (int8_t)((int32_t)(acc & mask) * mul - sub);
            acc >>= b;
            cnt -= b;
        }
    } else if (mb_dec.K == 1u) {
        const mb_tans_entry *lut = mb_dec.lut;
        uint32_t u = mb_dec.state[0];
        for (i = 0; i < n; i++) {
            const mb_tans_entry e = lut[u];
            if (cnt < 15u) MB_REFILL(acc, cnt, pos);
            out[i] = (int8_t)((int32_t)e.symbol * mul - sub);
            u = e.new_state_base + (acc & ((1u << e.nb_bits) - 1u));
            acc >>= e.nb_bits;
            cnt -= e.nb_bits;
        }
        mb_dec.state[0] = (uint16_t)u;
    } else {
        const mb_tans_entry *lut = mb_dec.lut;
        uint32_t k = mb_dec.k;
        const uint32_t K = mb_dec.K;
        for (i = 0; i < n; i++) {
            const mb_tans_entry e = lut[mb_dec.state[k]];
            if (cnt < 15u) MB_REFILL(acc, cnt, pos);
            out[i] = (int8_t)((int32_t)e.symbol * mul - sub);
            mb_dec.state[k] = (uint16_t)(e.new_state_base + (acc & ((1u << e.nb_bits) - 1u)));
            acc >>= e.nb_bits;
            cnt -= e.nb_bits;
            if (++k == K) k = 0;
        }
        mb_dec.k = k;
    }
    mb_dec.acc = acc;
    mb_dec.cnt = cnt;
    mb_dec.pos = pos;
}

/* BSN shift + HWMSB clamp. v <= 0 maps to 0, so only non-negative values are shifted. */
static int8_t mb_act(int32_t v, int32_t rshift) {
    if (v <= 0) return 0;
    if (rshift >= 0)
        v >>= rshift;
    else
        v = v > MB_ACT_MAX ? MB_ACT_MAX : v << -rshift; /* v <= 3: no overflow */
    return (int8_t)(v > MB_ACT_MAX ? MB_ACT_MAX : v);
}

/* a[i] += w * s[i]: the inner loop of the conv (restrict: int8_t may alias anything otherwise,
 * which would keep the compiler from vectorizing it). */
static void mb_axpy(int32_t *restrict a, const int8_t *restrict s, int32_t w, int32_t n) {
    int32_t i;
    for (i = 0; i < n; i++) a[i] += w * s[i];
}

static void mb_conv(const mb_layer *L, const int8_t *in, int8_t *out) {
    const int32_t H = L->h, W = L->w, HW = H * W, k = L->kernel, p = k / 2;
    const int32_t cg = L->cin / L->groups, og = L->cout / L->groups, nw = cg * k * k;
    const mb_param_t *off = mb_params + L->param_off;
    /* per-channel BSN ([I] beyond the paper): params o_c[cout], then (M_c << 8 | (rshift_c + 128))[cout] */
    const int32_t pc = L->rshift == MB_RSHIFT_PER_CHANNEL;
    int32_t co, ci, ky, kx, y, x;
    for (co = 0; co < L->cout; co++) {
        const int8_t *xg = in + (co / og) * cg * HW;
        const int32_t o = off[co];
        const int32_t Mrs = pc ? off[L->cout + co] : 0;
        const int32_t M = pc ? (Mrs >> 8) : 1;
        const int32_t rs = pc ? (Mrs & 0xff) - 128 : L->rshift;
        mb_decode(mb_wbuf, (uint32_t)nw);
        memset(mb_acc, 0, (size_t)HW * sizeof(int32_t));
        for (ci = 0; ci < cg; ci++) {
            const int8_t *plane = xg + ci * HW;
            const int8_t *wk = mb_wbuf + ci * k * k;
            for (ky = 0; ky < k; ky++) {
                const int32_t dy = ky - p, y0 = dy < 0 ? -dy : 0, y1 = dy > 0 ? H - dy : H;
                for (kx = 0; kx < k; kx++) {
                    const int32_t wv = wk[ky * k + kx], dx = kx - p;
                    const int32_t x0 = dx < 0 ? -dx : 0, x1 = dx > 0 ? W - dx : W;
                    if (wv == 0) continue;
                    if (dx == 0) { /* whole rows: one contiguous run */
                        mb_axpy(mb_acc + y0 * W, plane + (y0 + dy) * W, wv, (y1 - y0) * W);
                        continue;
                    }
                    for (y = y0; y < y1; y++)
                        mb_axpy(mb_acc + y * W + x0, plane + (y + dy) * W + x0 + dx, wv, x1 - x0);
                }
            }
        }
        if (L->kind == MB_KIND_CODE) { /* sign of the BSN output = sign of acc + o_c */
            int8_t *dst = out + co * HW;
            for (x = 0; x < HW; x++) dst[x] = (int8_t)(mb_acc[x] + o >= 0);
        } else if (!L->pool) {
            int8_t *dst = out + co * HW;
            for (x = 0; x < HW; x++) dst[x] = mb_act(mb_acc[x] * M + o, rs);
        } else {
            /* act is monotone, so max-pool the accumulators and apply it once */
            const int32_t Ho = H / 2, Wo = W / 2;
            int8_t *dst = out + co * Ho * Wo;
            for (y = 0; y < Ho; y++)
                for (x = 0; x < Wo; x++) {
                    const int32_t *a = mb_acc + 2 * y * W + 2 * x;
                    int32_t m = a[0];
                    if (a[1] > m) m = a[1];
                    if (a[W] > m) m = a[W];
                    if (a[W + 1] > m) m = a[W + 1];
                    dst[y * Wo + x] = mb_act(m * M + o, rs); /* M > 0: still monotone */
                }
        }
    }
}

#if MB_NUM_CLASSES > 0
static void mb_head(const mb_layer *L, const int8_t *in, int64_t *logits) {
    const int32_t HW = L->h * L->w, C = L->cin;
    const mb_param_t *bias = mb_params + L->param_off;
    int32_t c, j, i;
    for (c = 0; c < C; c++) {
        int32_t s = 0;
        for (i = 0; i < HW; i++) s += in[c * HW + i];
        mb_sums[c] = s;
    }
    for (j = 0; j < L->cout; j++) {
        int64_t z = bias[j];
        mb_decode(mb_wbuf, (uint32_t)C);
        for (c = 0; c < C; c++) z += (int64_t)mb_wbuf[c] * mb_sums[c];
        logits[j] = z;
    }
}

#endif

/* Run every layer; returns the buffer holding the last activation map (NULL if corrupt). */
static const int8_t *mb_run(const uint8_t *image, int64_t *logits) {
    int8_t *cur = mb_act0, *nxt = mb_act1, *t;
    uint32_t i;
    int ok = 1;
    for (i = 0; i < (uint32_t)MB_IN_C * MB_IN_H * MB_IN_W; i++) cur[i] = (int8_t)((int32_t)image[i] - 128);
    for (i = 0; i < MB_N_LAYERS; i++) {
        const mb_layer *L = &mb_layers[i];
        mb_dec_start(L);
        if (L->kind != MB_KIND_HEAD) {
            mb_conv(L, cur, nxt);
            t = cur;
            cur = nxt;
            nxt = t;
        } else {
#if MB_NUM_CLASSES > 0
            mb_head(L, cur, logits);
#else
            ok = 0; /* a head in an encoder model: cannot happen with an exported model */
#endif
        }
        ok &= mb_dec_finish(L);
    }
    (void)logits;
    return ok ? cur : (const int8_t *)0;
}

#if MB_NUM_CLASSES > 0
int mb_classify(const uint8_t *image, int64_t *logits) {
    int best = 0, j;
    if (!mb_run(image, logits)) return MB_ERR_CORRUPT;
    for (j = 1; j < MB_NUM_CLASSES; j++)
        if (logits[j] > logits[best]) best = j;
    return best;
}
#endif

#if MB_CODE_BITS > 0
int mb_encode(const uint8_t *patch, uint8_t *bits) {
    const int8_t *code = mb_run(patch, (int64_t *)0);
    int i;
    if (!code) return MB_ERR_CORRUPT;
    for (i = 0; i < MB_CODE_BITS; i++) bits[i] = (uint8_t)code[i];
    return 0;
}
#endif
