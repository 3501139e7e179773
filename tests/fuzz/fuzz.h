/*
 * fuzz.h - the libFuzzer entry points the targets in tests/fuzz define.
 *
 * With --enable-fuzzing, libFuzzer's main calls them; otherwise
 * standalone.c does, over the files of a seed corpus, so that the corpus
 * is a regression test in every build.
 */
#ifndef MBOX_TESTS_FUZZ_FUZZ_H
#define MBOX_TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Run one input. Returns 0; anything wrong aborts. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Once, before the first input. Returns 0. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif
