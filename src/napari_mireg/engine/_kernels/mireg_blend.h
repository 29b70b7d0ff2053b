/* The trilinear blend of a 3-component field's cell (a displacement field), in double.
 *
 * Components 0 and 1 of a corner are adjacent floats: with GCC's or clang's vector
 * extensions they are blended as one pair of doubles, component 2 alone. Each lane does
 * the operations of the scalar expression in the same order (IEEE double, no fused
 * multiply-add on the x86-64 baseline), so the result is the scalar one bit for bit; other
 * compilers (MSVC) run the scalar expression itself.
 */
#ifndef MIREG_BLEND_H
#define MIREG_BLEND_H
#include <stddef.h>

/* One component: _fields.pyx's `cell_value`. */
static inline double mireg_blend1(const float* c, ptrdiff_t s0, ptrdiff_t s1, ptrdiff_t s2,
                                  double f2, double w00, double w01, double w10, double w11)
{
    return (1 - f2) * (w00 * c[0] + w01 * c[s1] + w10 * c[s0] + w11 * c[s0 + s1])
           + f2 * (w00 * c[s2] + w01 * c[s1 + s2] + w10 * c[s0 + s2] + w11 * c[s0 + s1 + s2]);
}

#if defined(__GNUC__) || defined(__clang__)
typedef double mireg_v2d __attribute__((vector_size(16)));

static inline mireg_v2d mireg_pair(const float* p)
{
    mireg_v2d v = {p[0], p[1]};
    return v;
}

/* out[k] = component k of the blend of the cell whose first corner is c. */
static inline void mireg_blend3(const float* c, ptrdiff_t s0, ptrdiff_t s1, ptrdiff_t s2,
                                double f2, double w00, double w01, double w10, double w11,
                                double* out)
{
    mireg_v2d near = w00 * mireg_pair(c) + w01 * mireg_pair(c + s1) + w10 * mireg_pair(c + s0)
                     + w11 * mireg_pair(c + s0 + s1);
    mireg_v2d far = w00 * mireg_pair(c + s2) + w01 * mireg_pair(c + s1 + s2)
                    + w10 * mireg_pair(c + s0 + s2) + w11 * mireg_pair(c + s0 + s1 + s2);
    mireg_v2d blend = (1 - f2) * near + f2 * far;
    out[0] = blend[0];
    out[1] = blend[1];
    out[2] = mireg_blend1(c + 2, s0, s1, s2, f2, w00, w01, w10, w11);
}
#else
static inline void mireg_blend3(const float* c, ptrdiff_t s0, ptrdiff_t s1, ptrdiff_t s2,
                                double f2, double w00, double w01, double w10, double w11,
                                double* out)
{
    out[0] = mireg_blend1(c, s0, s1, s2, f2, w00, w01, w10, w11);
    out[1] = mireg_blend1(c + 1, s0, s1, s2, f2, w00, w01, w10, w11);
    out[2] = mireg_blend1(c + 2, s0, s1, s2, f2, w00, w01, w10, w11);
}
#endif
#endif
