// Image pass, iChannel0 = Buffer A: show channels 0..2 (+0.5) of the grid, tiled across the screen.
void mainImage(out vec4 o, in vec2 f) {
  ivec2 G = ivec2(int(iResolution.x) / 3, int(iResolution.y));
  ivec2 p = ivec2(f);
  p = ivec2(p.x % G.x, G.y - 1 - p.y);
  o = vec4(texelFetch(iChannel0, p, 0).rgb + .5, 1.);
}
