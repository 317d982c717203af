/* libFuzzer target: the .npy reader (bn_fuzz_npy in fuzz_entries.c). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)bn_fuzz_npy(data, size, NULL);
    return 0;
}
