/* The engine: the model behind one interface, whichever engine runs it (mcuforge's AOT C,
 * or TFLM with or without the Ethos-U NPU). engine_<name> in this folder implements it. */
#ifndef MCUFORGE_ENGINE_H
#define MCUFORGE_ENGINE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Make the model ready to run (TFLM allocates its tensors here). 0 on success. */
int engine_init(void);

int engine_num_inputs(void);
int engine_num_outputs(void);
/* Where input `index` goes before engine_invoke(), and its size in bytes. */
void *engine_input(int index);
uint32_t engine_input_bytes(int index);
/* Output `index` after engine_invoke(), valid until the next one, and its size in bytes. */
const void *engine_output(int index);
uint32_t engine_output_bytes(int index);

/* One inference. 0 on success. */
int engine_invoke(void);

#ifdef __cplusplus
}
#endif

#endif
