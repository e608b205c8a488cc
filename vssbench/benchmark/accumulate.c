/* The per-pixel work of vssbench's CPU metric accumulators (vssbench/benchmark/metrics.py).
 *
 * Plain C99 without the Python API: vssbench/benchmark/native.py compiles this file with the
 * system C compiler and loads it with ctypes. Label maps are contiguous uint8 arrays (classes
 * 0..C-1 with C <= 255; 255 marks an ignored target pixel). Every count equals what the torch
 * code of metrics.py gives; the tests compare the two.
 */
#include <stdint.h>
#include <string.h>

#define IGNORE_INDEX 255
#define LANES 4
#define BLOCK 8192 /* pixels updated, then counted while their ages are still in cache */
#define CHUNK 240  /* pixels whose stable count fits a uint8: a multiple of 16 below 256 */

/* The number of sub-histograms vss_confusion_update counts into. */
int vss_confusion_lanes(void) { return LANES; }

/* Adds one frame to the C x C confusion matrix (ground truth rows, prediction columns).
 *
 * Neighbouring pixels mostly hold the same (target, prediction) pair, and incrementing one
 * counter again waits for the previous increment's store. So pixel i counts into sub-histogram
 * i % LANES of `lanes` (LANES * C * C zeros, left zeroed), and the lanes are added into
 * `matrix` at the end: four independent chains instead of one.
 *
 * Returns 0 after adding the frame; without adding anything, 1 when a target is in C..254 and
 * 2 when a prediction is >= C. Predictions are checked first, so that every index is in bounds. */
int vss_confusion_update(const uint8_t *restrict target, const uint8_t *restrict prediction, int64_t pixels,
                         int64_t classes, int64_t *restrict matrix, uint32_t *restrict lanes) {
    const int64_t cells = classes * classes;
    uint8_t highest_prediction = 0;
    for (int64_t i = 0; i < pixels; i++) {
        highest_prediction = prediction[i] > highest_prediction ? prediction[i] : highest_prediction;
    }
    if (highest_prediction >= classes) {
        return 2;
    }
    int64_t invalid_targets = 0;
    int64_t i = 0;
    for (; i + LANES <= pixels; i += LANES) {
        for (int64_t lane = 0; lane < LANES; lane++) {
            const int64_t t = target[i + lane];
            if (t < classes) {
                lanes[lane * cells + t * classes + prediction[i + lane]]++;
            } else {
                invalid_targets += t != IGNORE_INDEX;
            }
        }
    }
    for (; i < pixels; i++) {
        const int64_t t = target[i];
        if (t < classes) {
            lanes[t * classes + prediction[i]]++;
        } else {
            invalid_targets += t != IGNORE_INDEX;
        }
    }
    if (invalid_targets == 0) {
        for (int64_t lane = 0; lane < LANES; lane++) {
            for (int64_t cell = 0; cell < cells; cell++) {
                matrix[cell] += lanes[lane * cells + cell];
            }
        }
    }
    memset(lanes, 0, sizeof(uint32_t) * LANES * cells);
    return invalid_targets == 0 ? 0 : 1;
}

/* Advances one video frame for mVC and counts the stable pixels of the windows ending at it.
 *
 * A pixel's age is the number of frames since the ground truth (age_target), or the ground
 * truth or the prediction (age_both), last changed, capped at `cap`; then the frame becomes the
 * previous one. For window w, stable[2w] and stable[2w + 1] receive the number of pixels whose
 * age_target, and whose age_both, is at least thresholds[w] (n - 1 for a window of n frames).
 * Each block of pixels is counted by every window right after its update, while it is in
 * cache, in chunks whose byte-wide counts compilers vectorise. */
void vss_consistency_update(const uint8_t *restrict target, const uint8_t *restrict prediction,
                            uint8_t *restrict previous_target, uint8_t *restrict previous_prediction,
                            uint8_t *restrict age_target, uint8_t *restrict age_both, int64_t pixels, uint8_t cap,
                            const uint8_t *restrict thresholds, int64_t windows, int64_t *restrict stable) {
    memset(stable, 0, sizeof(int64_t) * 2 * windows);
    for (int64_t start = 0; start < pixels; start += BLOCK) {
        const int64_t end = start + BLOCK < pixels ? start + BLOCK : pixels;
        for (int64_t i = start; i < end; i++) {
            const uint8_t same_target = target[i] == previous_target[i];
            const uint8_t same_both = same_target & (prediction[i] == previous_prediction[i]);
            const uint8_t older_target = age_target[i] < cap ? age_target[i] + 1 : cap;
            const uint8_t older_both = age_both[i] < cap ? age_both[i] + 1 : cap;
            age_target[i] = same_target ? older_target : 0;
            age_both[i] = same_both ? older_both : 0;
            previous_target[i] = target[i];
            previous_prediction[i] = prediction[i];
        }
        for (int64_t w = 0; w < windows; w++) {
            const uint8_t threshold = thresholds[w];
            for (int64_t chunk = start; chunk < end; chunk += CHUNK) {
                const int64_t chunk_end = chunk + CHUNK < end ? chunk + CHUNK : end;
                uint8_t chunk_target = 0, chunk_both = 0;
                for (int64_t i = chunk; i < chunk_end; i++) {
                    chunk_target += age_target[i] >= threshold;
                    chunk_both += age_both[i] >= threshold;
                }
                stable[2 * w] += chunk_target;
                stable[2 * w + 1] += chunk_both;
            }
        }
    }
}
