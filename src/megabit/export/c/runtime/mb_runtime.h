/* megabit C runtime: integer-only NQE inference with weights decoded on the fly.
 *
 * C99, no malloc, only the C standard library. Model-independent: the model
 * (descriptors, coded weights, tables, buffer sizes) comes from the generated
 * model.h / model.c. See docs/c-export.md in the megabit repository.
 */
#ifndef MB_RUNTIME_H
#define MB_RUNTIME_H

#include <stdint.h>

/* layer kinds (descriptor field `kind`) */
#define MB_KIND_CONV 1u /* conv (groups, odd k, 'same') + BSN shift + HWMSB clamp (+ 2x2 max-pool) */
#define MB_KIND_HEAD 2u /* sum-pool over H,W + integer linear layer + bias -> int64 logits */
#define MB_RSHIFT_PER_CHANNEL (-128) /* [I] per-channel BSN scale, see mb_layer.rshift */
#define MB_KIND_CODE 3u /* patch encoder output: 1x1 conv + offset, bit = (acc + o_c >= 0) */

/* weight coders: the same ids as the `coder` byte of a .mbit section */
#define MB_CODER_RAW 1u  /* ceil(log2(levels)) bits per weight, LSB-first */
#define MB_CODER_TANS 2u /* megabit.entropy.tans bitstream, K interleaved streams */

/* return codes of mb_classify (>= 0: the predicted class) and mb_encode (0: ok) */
#define MB_ERR_CORRUPT (-1) /* a weight stream did not decode cleanly (flash corrupted?) */

/* One tANS decode-table entry; 4 bytes (= megabit.entropy.tans dec_lut). */
typedef struct {
    uint8_t symbol;
    uint8_t nb_bits;
    uint16_t new_state_base;
} mb_tans_entry;

/* One layer. Pointer-free on purpose: fixed-width fields, explicit layout
 * (44 bytes, no padding), offsets into the model's const arrays, so the
 * descriptor table has the same size on every target and could itself be
 * shipped as data. */
typedef struct {
    uint8_t kind;      /* MB_KIND_* */
    uint8_t coder;     /* MB_CODER_* */
    uint8_t levels;    /* weight levels n: symbol s -> code s - n/2 (odd n), 2s - (n-1) (even n) */
    uint8_t kernel;    /* odd kernel size k (1 for the head) */
    uint8_t pool;      /* 1: 2x2 max-pool (floor) after the activation */
    int8_t rshift;     /* BSN shift minus activation bits: u = (acc + off) >> rshift (<< -rshift if < 0);
                          MB_RSHIFT_PER_CHANNEL: params hold o_c[cout], then M_c << 8 | (rshift_c + 128)
                          for each channel (u = (acc * M_c + o_c) >> rshift_c) */
    uint8_t code_bits; /* tANS: table_log; raw: bits per weight */
    uint8_t n_freqs;   /* tANS alphabet size (length of the frequency table) */
    uint16_t cin, cout, groups; /* head: cin = features, cout = classes, groups = 1 */
    uint16_t h, w;              /* input height/width (head: of the feature map it sum-pools) */
    uint16_t n_streams;         /* tANS interleaved streams K (raw: 0) */
    uint32_t n_weights;         /* cout * cin/groups * k * k, in [cout][cin/groups][k][k] order */
    uint32_t stream_off;        /* byte offset of the coded weights in mb_weight_data */
    uint32_t stream_bits;       /* valid bits of the coded weights */
    uint32_t lut_off;           /* tANS: entry offset of the decode table in mb_luts */
    uint32_t state_off;         /* tANS: offset of the K initial states in mb_init_states */
    uint32_t param_off;         /* offset in mb_params: conv offsets o_c (cout), head bias (cout) */
} mb_layer;

/* Run the network on one uint8 CHW image (MB_IN_C x MB_IN_H x MB_IN_W, see model.h);
 * writes MB_NUM_CLASSES int64 logits and returns the argmax (first maximum),
 * or MB_ERR_CORRUPT. Not reentrant: uses the static buffers of mb_runtime.c. */
int mb_classify(const uint8_t *image, int64_t *logits);

/* Patch encoder models: run the encoder on one uint8 CHW 3x32x32 patch; writes MB_CODE_BITS
 * bits (one 0/1 byte each, channel-major [C][g][g] = megabit's bit order) and returns 0,
 * or MB_ERR_CORRUPT. Not reentrant. */
int mb_encode(const uint8_t *patch, uint8_t *bits);

#endif /* MB_RUNTIME_H */
