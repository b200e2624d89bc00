// Neural cellular automaton, texture rule: __PARAMETERS__ parameters as __BITS__-bit integers.
// ShaderToy "Buffer A" with iChannel0 = Buffer A. A W x H grid lives in a 3W x H buffer:
// pixel (k*W + x, y) holds channels 4k..4k+3 of cell (x, y). Drag the mouse to erase cells.
// State: __STATE_BITS__-bit values (8: the buffer's byte b, read as b / 255, holds the code b - 127 of the value (b - 127) / 127).
#define STATE_BITS __STATE_BITS__
#ifndef UPDATE_RATE
#define UPDATE_RATE __UPDATE_RATE__
#endif
#ifndef MOUSE_MODE
#define MOUSE_MODE 0
#endif
#define WS __WEIGHT_SCALE__
#define BS __BIAS_SCALE__
// W[12*k + j]: weights from input group j (4 values) to tile k (4 channels); B[k]: biases of tile k.
const mat4 W[36] = mat4[](
  __WEIGHTS__);
const vec4 B[3] = vec4[](__BIASES__);
ivec2 G; // grid size in cells
#if STATE_BITS == 8
vec4 load(vec4 t) { return (round(t * 255.) - 127.) / 127.; }
vec4 store(vec4 v) { return (roundEven(clamp(v, -1., 1.) * 127.) + 127.) / 255.; } // 255 levels in [-1, 1]
#else
vec4 load(vec4 t) { return t; }
vec4 store(vec4 v) { return v; }
#endif

// Tile k (channels 4k..4k+3) of cell c, wrapping around the edges of the grid.
vec4 S(ivec2 c, int k) { c = (c + G) % G; return load(texelFetch(iChannel0, ivec2(c.x + k * G.x, c.y), 0)); }

// A uniform random number in [0, 1) for every cell, channel and frame (integer hash).
float rnd(ivec2 p, int c, int frame) {
  uint h = uint(p.x) * 1973u + uint(p.y) * 9277u + uint(c) * 26699u + uint(frame) * 104729u;
  h ^= h >> 16; h *= 0x7feb352du; h ^= h >> 15; h *= 0x846ca68bu; h ^= h >> 16;
  return float(h >> 8) / 16777216.0;
}

void mainImage(out vec4 o, in vec2 f) {
  G = ivec2(int(iResolution.x) / 3, int(iResolution.y));
  ivec2 p = ivec2(f);
  int k = p.x / G.x;
  p.x -= k * G.x;
  if (k > 2 || iFrame < 1) { o = store(vec4(0)); return; }
  // Perception: Laplacian on tile 0, Sobel-x on tile 1, Sobel-y on tile 2 (y grows downwards).
  vec4 s[3], q[3];
  for (int t = 0; t < 3; t++) {
    vec4 a = S(p + ivec2(-1, -1), t), b = S(p + ivec2(0, -1), t), c = S(p + ivec2(1, -1), t);
    vec4 d = S(p + ivec2(-1, 0), t), e = S(p, t), g = S(p + ivec2(1, 0), t);
    vec4 h = S(p + ivec2(-1, 1), t), i = S(p + ivec2(0, 1), t), j = S(p + ivec2(1, 1), t);
    s[t] = e;
    q[t] = t == 0 ? a + c + h + j + 2. * (b + d + g + i) - 12. * e
         : t == 1 ? c + 2. * g + j - a - 2. * d - h
         : h + 2. * i + j - a - 2. * b - c;
  }
  // The 48 inputs: relu of state and perception, then their negative parts.
  vec4 x[12];
  for (int t = 0; t < 3; t++) {
    x[t] = max(s[t], 0.); x[t + 3] = max(q[t], 0.);
    x[t + 6] = min(s[t], 0.); x[t + 9] = min(q[t], 0.);
  }
  vec4 dx = B[k] * BS;
  for (int j = 0; j < 12; j++) dx += x[j] * (W[12 * k + j] * WS);
  // Stochastic update: __MASK_COMMENT__ changes with probability UPDATE_RATE.
  vec4 m = vec4(0);
  for (int c = 0; c < 4; c++) m[c] = rnd(p, __MASK_CHANNEL__, iFrame) < float(UPDATE_RATE) ? 1. : 0.;
  o = s[k] + dx * m;
  // Mouse (drawn as in the image pass): erase (MOUSE_MODE 0) or disturb (1) the cells near it.
  ivec2 mc = ivec2(int(iMouse.x) % G.x, G.y - 1 - int(iMouse.y));
  if (iMouse.z > 0. && length(vec2(p - mc)) < 0.06 * float(G.y)) {
    o = MOUSE_MODE == 0 ? vec4(0) : o + vec4(rnd(p, 12, iFrame), rnd(p, 13, iFrame), rnd(p, 14, iFrame), rnd(p, 15, iFrame)) - .5;
  }
  o = store(o);
}
