/* libFuzzer target: the .csv reader (bn_fuzz_csv in fuzz_entries.c). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)bn_fuzz_csv(data, size, NULL);
    return 0;
}
