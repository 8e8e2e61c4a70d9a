/* megabit C export: classify raw images, or encode raw 32x32 patches.
 *
 *   ./model [FILE]     FILE (or stdin when absent or "-"): raw uint8 CHW images,
 *                      MB_IN_C x MB_IN_H x MB_IN_W bytes each, back to back.
 *
 * Prints one line per image: "<class> <logit_0> ... <logit_{C-1}>" (classifier) or the
 * MB_CODE_BITS code bits as a string of 0/1 in megabit's bit order (patch encoder).
 * Exit status: 0 ok, 1 bad usage / I/O error / trailing partial image, 3 corrupt weights.
 */
#include <inttypes.h>
#include <stdio.h>

#include "model.h"

#define MB_IMAGE_BYTES ((size_t)MB_IN_C * MB_IN_H * MB_IN_W)

static uint8_t image[MB_IMAGE_BYTES];
#if MB_CODE_BITS > 0
static uint8_t bits[MB_CODE_BITS];
#else
static int64_t logits[MB_NUM_CLASSES];
#endif

int main(int argc, char **argv) {
    FILE *f = stdin;
    size_t got;
    unsigned long n = 0;
    int j;
    if (argc > 2) {
        fprintf(stderr, "usage: %s [IMAGES.raw|-]  (uint8 CHW %dx%dx%d per image)\n", argv[0], MB_IN_C, MB_IN_H, MB_IN_W);
        return 1;
    }
    if (argc == 2 && !(argv[1][0] == '-' && argv[1][1] == '\0')) {
        f = fopen(argv[1], "rb");
        if (!f) {
            fprintf(stderr, "error: cannot open %s\n", argv[1]);
            return 1;
        }
    }
    while ((got = fread(image, 1, MB_IMAGE_BYTES, f)) == MB_IMAGE_BYTES) {
#if MB_CODE_BITS > 0
        if (mb_encode(image, bits) < 0) {
            fprintf(stderr, "error: corrupted weight stream (image %lu)\n", n);
            return 3;
        }
        for (j = 0; j < MB_CODE_BITS; j++) putchar('0' + bits[j]);
#else
        int cls = mb_classify(image, logits);
        if (cls < 0) {
            fprintf(stderr, "error: corrupted weight stream (image %lu)\n", n);
            return 3;
        }
        printf("%d", cls);
        for (j = 0; j < MB_NUM_CLASSES; j++) printf(" %" PRId64, logits[j]);
#endif
        putchar('\n');
        n++;
    }
    if (ferror(f) || got != 0) {
        fprintf(stderr, "error: %s after %lu images\n", ferror(f) ? "read failed" : "trailing partial image", n);
        return 1;
    }
    if (f != stdin) fclose(f);
    return 0;
}
