// Image pass, iChannel0 = Buffer A: show channels 0..2 (+0.5) of the grid, tiled across the screen.
void mainImage(out vec4 o, in vec2 f) {
  ivec2 G = ivec2(int(iResolution.x) / 3, int(iResolution.y));
  ivec2 p = ivec2(f);
  p = ivec2(p.x % G.x, G.y - 1 - p.y);
  vec3 v = texelFetch(iChannel0, p, 0).rgb;
#if defined(STATE_BITS) && STATE_BITS == 8
  v = (round(v * 255.) - 127.) / 127.;  // 8-bit state: the byte b holds the value (b - 127) / 127
#endif
  o = vec4(v + .5, 1.);
}
