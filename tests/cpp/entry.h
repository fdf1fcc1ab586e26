/* Forced in front of the C++ test program: its renamed main keeps C linkage,
 * so the Rust test can call it. Users' programs need nothing like this. */
#ifdef __cplusplus
extern "C" int xnncache_cpp_smoke_main(void);
#endif
