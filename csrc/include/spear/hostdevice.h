// One macro so that the per-sample math compiles for host and device from one source.
#pragma once

#if defined(__CUDACC__)
#define SPEAR_HD __host__ __device__
#define SPEAR_UNROLL _Pragma("unroll")
#else
#define SPEAR_HD
#define SPEAR_UNROLL
#endif
