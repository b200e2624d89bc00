// One step of the chapter-03 NCA, forward and backward, fused into one pass over the grid.
//
// This is the CPU kernel behind helpers.fast (compiled and loaded by helpers/fast/cpu_kernel.py).
// It computes exactly what helpers.nca.NCA computes, in the same float32 arithmetic up to the
// order of the sums, NaN and inf included (they propagate as through PyTorch's operations: no
// comparison here may turn a NaN into a number):
//
//   p = P x                      depthwise 3x3 convolution (one filter per channel), wrapping around
//                                the edges or, with zero_padding, reading 0 beyond them
//   s = [relu(x), relu(p), min(x, 0), min(p, 0)]          (or [x, p] without the sign split)
//   y = x + m * (W s + b)        m: this step's 0/1 update mask
//
// Why it is faster than the same mathematics in PyTorch operations: every cell's 48 features
// live only in registers and never travel through memory, and a row of the grid is read once
// per step instead of once per operation. Eight neighbouring cells of a row are computed together
// as one vector of 8 floats (GCC/Clang vector extensions: AVX on x86, two NEON registers on ARM).
// Rows are shared out between threads with OpenMP when the compiler supports it.
//
// Layout: every tensor is a contiguous float32 [B, C, H, W] (masks: uint8 [B, C or 1, H, W]);
// the weights are [C, K] with K = 4C (or 2C), filters [C, 9], row-major 3x3. The rule's options
// keep the names of helpers.nca.Rule: split_relu, update_per_channel for update_per == "channel", and
// zero_padding for padding == "zeros".

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef float v8 __attribute__((vector_size(32)));    // 8 cells of one row, one channel

static const int LANES = 8;
static const int MAX_CHANNELS = 16;
static const int MAX_FEATURES = 4 * MAX_CHANNELS;

struct Rule {
    const float* weight;    // [C, K]
    const float* bias;      // [C]
    const float* filters;   // [C, 9]
    int channels, features, split_relu;
};

struct Grid {
    int batch, channels, height, width;
    int zero_padding;       // 1: cells beyond the border read as 0; 0: the grid wraps around
    long plane() const { return (long)height * width; }
    long image() const { return channels * plane(); }
    int rows() const { return batch * height; }
    int row_buffer() const { return (width + LANES - 1) / LANES * LANES + 2; }   // x = -1 .. W, rounded up
};

typedef uint8_t bytes8 __attribute__((vector_size(8)));

static inline v8 load(const float* p) { v8 v; std::memcpy(&v, p, sizeof v); return v; }
static inline v8 splat(float a) { return v8{} + a; }

// The first n lanes (the last vector of a row may stick out of the grid: those lanes are 0).
static inline v8 load(const float* p, int n) {
    if (n == LANES) return load(p);
    v8 v = {};
    std::memcpy(&v, p, sizeof(float) * n);
    return v;
}

// Store the first n lanes (the rest of the last vector of a row falls outside the grid).
static inline void store(float* p, v8 v, int n) {
    if (n == LANES) std::memcpy(p, &v, sizeof v);
    else std::memcpy(p, &v, sizeof(float) * n);
}

// Rows y-1, y, y+1 of every channel of one image, with one padding cell on each side:
// rows[(c * 3 + r) * stride + 1 + x] holds channel c at row y + r - 1, column x (x = -1 .. W).
// Beyond the border: the opposite edge (wrap around), or 0 with zero padding.
static void load_rows(const float* image, const Grid& g, int y, float* rows) {
    const int stride = g.row_buffer(), w = g.width;
    for (int c = 0; c < g.channels; ++c) {
        for (int r = 0; r < 3; ++r) {
            float* target = rows + (c * 3 + r) * stride;
            const int row = y + r - 1;
            if (g.zero_padding && (row < 0 || row >= g.height)) {
                std::memset(target, 0, sizeof(float) * (w + 2));
                continue;
            }
            const int source_row = (row + g.height) % g.height;
            const float* source = image + c * g.plane() + (long)source_row * w;
            target[0] = g.zero_padding ? 0.0f : source[w - 1];
            std::memcpy(target + 1, source, sizeof(float) * w);
            target[w + 1] = g.zero_padding ? 0.0f : source[0];
        }
    }
}

// The perception of channel c for the 8 cells starting at column x0: sum of filter * neighbours.
static inline v8 perceive(const float* rows, int stride, int c, int x0, const float* filter) {
    v8 sum = {};
    for (int r = 0; r < 3; ++r)
        for (int dx = 0; dx < 3; ++dx)
            sum += filter[r * 3 + dx] * load(rows + (c * 3 + r) * stride + x0 + dx);
    return sum;
}

// The features s of 8 cells (see the top of the file) and their state values x.
static inline void features(const float* rows, int stride, int x0, const Rule& rule, v8* state, v8* s) {
    const int C = rule.channels;
    const v8 zero = {};
    for (int c = 0; c < C; ++c) {
        const v8 x = load(rows + (c * 3 + 1) * stride + x0 + 1);
        const v8 p = perceive(rows, stride, c, x0, rule.filters + 9 * c);
        state[c] = x;
        if (rule.split_relu) {
            // relu(v) and min(v, 0) as PyTorch computes them, NaN included: a comparison with NaN is
            // false, so "v < 0 ? 0 : v" keeps a NaN (where "v > 0 ? v : 0" would turn it into 0).
            s[c] = x < 0 ? zero : x;
            s[C + c] = p < 0 ? zero : p;
            s[2 * C + c] = x > 0 ? zero : x;
            s[3 * C + c] = p > 0 ? zero : p;
        } else {
            s[c] = x;
            s[C + c] = p;
        }
    }
}

// The 0/1 mask of 8 cells as floats, from the mask bytes.
static inline v8 mask_of(const uint8_t* mask, int n) {
    bytes8 bytes = {};
    if (n == LANES) std::memcpy(&bytes, mask, LANES);
    else std::memcpy(&bytes, mask, n);
    return __builtin_convertvector(bytes, v8);
}

static inline const uint8_t* mask_row(const uint8_t* mask, const Grid& g, int update_per_channel, int b, int c,
                                      int y) {
    const int mask_channels = update_per_channel ? g.channels : 1;
    return mask + ((long)b * mask_channels + (update_per_channel ? c : 0)) * g.plane() + (long)y * g.width;
}

static int thread_count(int requested) {
#ifdef _OPENMP
    return requested > 0 ? requested : omp_get_max_threads();
#else
    (void)requested;
    return 1;
#endif
}

static int thread_index() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// One step for every cell of every image. x and y are separate [B, C, H, W] buffers.
// FIXED_C: the channel count as a compile-time constant (12, the course's NCA), so that the
// 12 outputs of a cell stay in 12 vector registers; 0 means "read it from the argument".
template <int FIXED_C>
static void step(const float* x, const uint8_t* mask, float* y, const float* weight, const float* bias,
                 const float* filters, const Grid& g, int split_relu, int update_per_channel, int threads) {
    const int C = FIXED_C ? FIXED_C : g.channels;
    const Rule rule{weight, bias, filters, C, (split_relu ? 4 : 2) * C, split_relu};
    const int K = rule.features, stride = g.row_buffer();
    // The weights transposed, [K, C]: for each feature, its weight into each of the C outputs.
    std::vector<float> weight_t(K * C);
    for (int o = 0; o < C; ++o)
        for (int k = 0; k < K; ++k) weight_t[k * C + o] = weight[o * K + k];
#pragma omp parallel num_threads(thread_count(threads))
    {
        std::vector<float> rows(3 * C * stride, 0.0f);
        v8 state[MAX_CHANNELS], s[MAX_FEATURES], delta[MAX_CHANNELS];
#pragma omp for schedule(static)
        for (int row = 0; row < g.rows(); ++row) {
            const int b = row / g.height, yy = row % g.height;
            load_rows(x + b * g.image(), g, yy, rows.data());
            for (int x0 = 0; x0 < g.width; x0 += LANES) {
                const int n = g.width - x0 < LANES ? g.width - x0 : LANES;
                features(rows.data(), stride, x0, rule, state, s);
                // delta = W s + b, one feature at a time into all C outputs: C independent sums.
                for (int o = 0; o < C; ++o) delta[o] = splat(bias[o]);
                for (int k = 0; k < K; ++k) {
                    const float* w = weight_t.data() + k * C;
                    for (int o = 0; o < C; ++o) delta[o] += w[o] * s[k];
                }
                for (int o = 0; o < C; ++o) {
                    const v8 m = mask_of(mask_row(mask, g, update_per_channel, b, o, yy) + x0, n);
                    store(y + b * g.image() + o * g.plane() + (long)yy * g.width + x0, state[o] + m * delta[o], n);
                }
            }
        }
    }
}

// dW += G S^T for one row of cells: g_row holds the row's gradients g ([chunk][C] vectors of 8
// cells), s_row its features ([chunk][K]). Blocks of 4 outputs x 3 features keep 12 sums in
// registers while walking along the row (7 loads for 12 multiply-adds, no stores).
static void add_weight_gradient(v8* dwb, const v8* g_row, const v8* s_row, int chunks, int C, int K) {
    for (int o = 0; o < C; ++o) {                  // bias: db += sum of g
        v8 total = {};
        for (int j = 0; j < chunks; ++j) total += g_row[j * C + o];
        dwb[o * (K + 1) + K] += total;
    }
    if (C % 4 != 0 || K % 3 != 0) {                // other shapes: the same sums, one at a time
        for (int o = 0; o < C; ++o)
            for (int k = 0; k < K; ++k) {
                v8 total = {};
                for (int j = 0; j < chunks; ++j) total += g_row[j * C + o] * s_row[j * K + k];
                dwb[o * (K + 1) + k] += total;
            }
        return;
    }
    for (int o0 = 0; o0 < C; o0 += 4)
        for (int k0 = 0; k0 < K; k0 += 3) {
            v8 sum[4][3] = {};
            for (int j = 0; j < chunks; ++j) {
                const v8* g = g_row + j * C + o0;
                const v8* s = s_row + j * K + k0;
                for (int i = 0; i < 4; ++i)
                    for (int l = 0; l < 3; ++l) sum[i][l] += g[i] * s[l];
            }
            for (int i = 0; i < 4; ++i)
                for (int l = 0; l < 3; ++l) dwb[(o0 + i) * (K + 1) + k0 + l] += sum[i][l];
        }
}

// gs = W^T g for 8 cells: 4 features at a time (4 sums in registers, C outputs each).
static inline void feature_gradient(const float* weight, const v8* grad, int C, int K, v8* gs) {
    if (K % 4 != 0) {                               // other shapes: one feature at a time
        for (int k = 0; k < K; ++k) {
            v8 sum = {};
            for (int o = 0; o < C; ++o) sum += weight[o * K + k] * grad[o];
            gs[k] = sum;
        }
        return;
    }
    for (int k0 = 0; k0 < K; k0 += 4) {
        v8 sum0 = {}, sum1 = {}, sum2 = {}, sum3 = {};
        for (int o = 0; o < C; ++o) {
            const float* w = weight + o * K + k0;
            sum0 += w[0] * grad[o];
            sum1 += w[1] * grad[o];
            sum2 += w[2] * grad[o];
            sum3 += w[3] * grad[o];
        }
        gs[k0] = sum0, gs[k0 + 1] = sum1, gs[k0 + 2] = sum2, gs[k0 + 3] = sum3;
    }
}

// The backward pass of one step. Given gy = dL/dy, it writes gx = dL/dx and ADDS this step's
// gradient of the weights and bias into grad_wb [C, K + 1] (the bias gradient is the last column).
// gp [B, C, H, W] is scratch space for dL/dp, the gradient of the perception.
//
//   g  = m * gy                      gradient of the proposed change W s + b
//   dW += g s^T, db += g
//   gs = W^T g                       gradient of the features
//   gf = gs_relu [f > 0] + gs_min [f < 0]       for f = x and f = p (slope 0 at f = 0, as torch;
//                                               both halves pass the gradient where f is NaN, as torch)
//   gx = gy + gf_x + P^T gf_p        P^T: the same convolution with every filter rotated by 180 deg
//                                    and the same padding (the adjoint of zero padding pads with 0)
template <int FIXED_C>
static void step_backward(const float* x, const uint8_t* mask, const float* gy, float* gx, float* grad_wb,
                          float* gp, const float* weight, const float* bias, const float* filters,
                          const float* filters_flipped, const Grid& g, int split_relu, int update_per_channel,
                          int threads) {
    const int C = FIXED_C ? FIXED_C : g.channels;
    const Rule rule{weight, bias, filters, C, (split_relu ? 4 : 2) * C, split_relu};
    const int K = rule.features, stride = g.row_buffer(), nthreads = thread_count(threads);
    const int chunks = (g.width + LANES - 1) / LANES;
    // One accumulator of 8 lanes per weight and bias, per thread: summed at the end.
    std::vector<v8> partial((size_t)nthreads * C * (K + 1), v8{});
#pragma omp parallel num_threads(nthreads)
    {
        std::vector<float> rows(3 * C * stride, 0.0f);
        std::vector<v8> s_row((size_t)chunks * K), g_row((size_t)chunks * C);   // one row's s and g
        v8 state[MAX_CHANNELS], upstream[MAX_CHANNELS], gs[MAX_FEATURES];
        v8* dwb = partial.data() + (size_t)thread_index() * C * (K + 1);
        const v8 zero = {};
#pragma omp for schedule(static)
        for (int row = 0; row < g.rows(); ++row) {
            const int b = row / g.height, yy = row % g.height;
            load_rows(x + b * g.image(), g, yy, rows.data());
            for (int j = 0, x0 = 0; j < chunks; ++j, x0 += LANES) {
                const int n = g.width - x0 < LANES ? g.width - x0 : LANES;
                const long at = b * g.image() + (long)yy * g.width + x0;     // channel 0 of these cells
                v8* s = s_row.data() + j * K;
                v8* grad = g_row.data() + j * C;
                features(rows.data(), stride, x0, rule, state, s);
                // The lanes of the last vector of a row that lie outside the grid read the padding
                // cell and zeros: set their features to 0, so that a NaN or inf there cannot reach
                // dW (as 0 * NaN) where the plain model has no such cell.
                if (n < LANES) {
                    v8 inside = {};
                    for (int i = 0; i < n; ++i) inside[i] = 1.0f;
                    for (int k = 0; k < K; ++k) s[k] = inside != 0 ? s[k] : zero;
                }
                for (int o = 0; o < C; ++o) {
                    upstream[o] = load(gy + at + o * g.plane(), n);
                    grad[o] = mask_of(mask_row(mask, g, update_per_channel, b, o, yy) + x0, n) * upstream[o];
                }
                feature_gradient(weight, grad, C, K, gs);
                for (int c = 0; c < C; ++c) {
                    v8 grad_x = gs[c], grad_p = gs[C + c];
                    if (split_relu) {
                        // PyTorch's relu passes the gradient where its result is not <= 0: where
                        // relu(f) > 0, and where f is NaN. So does the min(f, 0) = -relu(-f) half.
                        // "!= 0" is true for NaN (relu(f) >= 0 and min(f, 0) <= 0 otherwise).
                        grad_x = (s[c] != 0 ? gs[c] : zero) + (s[2 * C + c] != 0 ? gs[2 * C + c] : zero);
                        grad_p = (s[C + c] != 0 ? gs[C + c] : zero) + (s[3 * C + c] != 0 ? gs[3 * C + c] : zero);
                    }
                    store(gx + at + c * g.plane(), upstream[c] + grad_x, n);
                    store(gp + at + c * g.plane(), grad_p, n);
                }
            }
            add_weight_gradient(dwb, g_row.data(), s_row.data(), chunks, C, K);
        }
        // (the implicit barrier of "omp for": every gp is written before anyone reads it)
#pragma omp for schedule(static)
        for (int row = 0; row < g.rows(); ++row) {
            const int b = row / g.height, yy = row % g.height;
            load_rows(gp + b * g.image(), g, yy, rows.data());
            for (int x0 = 0; x0 < g.width; x0 += LANES) {
                const int n = g.width - x0 < LANES ? g.width - x0 : LANES;
                for (int c = 0; c < C; ++c) {
                    float* target = gx + b * g.image() + c * g.plane() + (long)yy * g.width + x0;
                    store(target, load(target, n) + perceive(rows.data(), stride, c, x0, filters_flipped + 9 * c), n);
                }
            }
        }
    }
    for (int t = 0; t < nthreads; ++t)
        for (int j = 0; j < C * (K + 1); ++j) {
            const v8 lanes = partial[(size_t)t * C * (K + 1) + j];
            float total = 0.0f;
            for (int i = 0; i < LANES; ++i) total += lanes[i];
            grad_wb[j] += total;
        }
}

extern "C" {

// The one place the kernel's version is written (helpers.fast.cpu_kernel.version() reports it; raise
// it when a function below changes), and the most channels the kernel runs (Python asks, too).
int nca_kernel_version() { return 5; }

int nca_kernel_max_channels() { return MAX_CHANNELS; }

void nca_step(const float* x, const uint8_t* mask, float* y, const float* weight, const float* bias,
              const float* filters, int batch, int channels, int height, int width, int split_relu,
              int update_per_channel, int zero_padding, int threads) {
    const Grid g{batch, channels, height, width, zero_padding};
    if (channels == 12) step<12>(x, mask, y, weight, bias, filters, g, split_relu, update_per_channel, threads);
    else step<0>(x, mask, y, weight, bias, filters, g, split_relu, update_per_channel, threads);
}

void nca_step_backward(const float* x, const uint8_t* mask, const float* gy, float* gx, float* grad_wb,
                       float* gp, const float* weight, const float* bias, const float* filters,
                       const float* filters_flipped, int batch, int channels, int height, int width,
                       int split_relu, int update_per_channel, int zero_padding, int threads) {
    const Grid g{batch, channels, height, width, zero_padding};
    if (channels == 12)
        step_backward<12>(x, mask, gy, gx, grad_wb, gp, weight, bias, filters, filters_flipped, g, split_relu,
                          update_per_channel, threads);
    else
        step_backward<0>(x, mask, gy, gx, grad_wb, gp, weight, bias, filters, filters_flipped, g, split_relu,
                         update_per_channel, threads);
}

// A random 0/1 mask with P(1) = threshold / 2^32, from a counter-based hash of (seed, index):
// every value is independent of every other, and the same seed gives the same mask.
void nca_random_mask(uint8_t* mask, long count, uint64_t seed, uint64_t threshold, int threads) {
#pragma omp parallel for num_threads(thread_count(threads)) schedule(static)
    for (long i = 0; i < count; ++i) {
        uint64_t z = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;      // splitmix64's mixing function
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        mask[i] = (z >> 32) < threshold;
    }
}

// The plain version's mask, torch.rand(shape, generator) < rate, drawn here without the float
// tensor in between: the same Mersenne Twister stream, the same numbers, the same 0/1 values.
//
// PyTorch's CPU generator is an MT19937 (Matsumoto and Nishimura, 1998). torch.rand in float32
// takes one 32-bit output per value, in order, and keeps its low 24 bits: u = (y mod 2^24) / 2^24,
// so u < rate exactly when (y mod 2^24) < threshold = ceil(float32(rate) * 2^24).
//
// generator_state is the byte blob of torch.Generator.get_state(); this function reads the
// twister's words and position from it, draws count values and writes the new position back, so
// that Generator.set_state() leaves the generator where torch.rand would have left it.
// helpers/fast/cpu_kernel.py checks this against torch.rand before using it (and falls back if not).
namespace twister {
const int N = 624, M = 397;
const uint32_t MATRIX_A = 0x9908b0dfu, UPPER = 0x80000000u, LOWER = 0x7fffffffu;
// Byte offsets in PyTorch's state blob: seed (u64), left (i32), seeded (i32), next (u64), words (624 x u64).
const int LEFT_AT = 8, NEXT_AT = 16, WORDS_AT = 24;

static inline uint32_t twist(uint32_t upper_of, uint32_t lower_of, uint32_t partner) {
    const uint32_t y = (upper_of & UPPER) | (lower_of & LOWER);
    return partner ^ (y >> 1) ^ ((0u - (y & 1u)) & MATRIX_A);   // (y odd ? MATRIX_A : 0), branch-free
}

// The next 624 words of the twister from the current 624 (the recurrence of MT19937),
// word[i] = twist(word[i], word[i + 1], word[i + M]) with indices mod N, in three loops without
// a modulo (so the compiler can vectorize the first two).
static void regenerate(uint32_t* word) {
    int i = 0;
    for (; i < N - M; ++i) word[i] = twist(word[i], word[i + 1], word[i + M]);
    for (; i < N - 1; ++i) word[i] = twist(word[i], word[i + 1], word[i + M - N]);
    word[N - 1] = twist(word[N - 1], word[0], word[M - 1]);
}

static inline uint32_t temper(uint32_t y) {
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}
}  // namespace twister

void nca_torch_rand_mask(uint8_t* generator_state, uint8_t* mask, long count, uint32_t threshold) {
    using namespace twister;
    uint32_t word[N];
    int32_t left;
    uint64_t next, stored;
    std::memcpy(&left, generator_state + LEFT_AT, sizeof left);
    std::memcpy(&next, generator_state + NEXT_AT, sizeof next);
    for (int i = 0; i < N; ++i) {
        std::memcpy(&stored, generator_state + WORDS_AT + 8 * i, sizeof stored);
        word[i] = (uint32_t)stored;
    }
    // PyTorch's bookkeeping: "left - 1" words remain from position "next" before the twister must
    // regenerate; after regenerating, all N remain from position 0.
    for (long done = 0; done < count;) {
        if (left <= 1) {
            regenerate(word);
            left = N + 1;
            next = 0;
        }
        const long take = (long)(left - 1) < count - done ? (long)(left - 1) : count - done;
        for (long j = 0; j < take; ++j)
            mask[done + j] = (temper(word[next + j]) & 0xffffffu) < threshold;
        done += take, next += take, left -= (int32_t)take;
    }
    std::memcpy(generator_state + LEFT_AT, &left, sizeof left);
    std::memcpy(generator_state + NEXT_AT, &next, sizeof next);
    for (int i = 0; i < N; ++i) {
        stored = word[i];
        std::memcpy(generator_state + WORDS_AT + 8 * i, &stored, sizeof stored);
    }
}

}  // extern "C"
