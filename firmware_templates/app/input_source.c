/* Where the inference loop's input comes from.
 *
 * The loop calls mcuforge_input_fill() before every inference with the buffer that holds all
 * the model's inputs, one after the other (MCUFORGE_INPUT_BYTES in all). This default leaves
 * the buffer as it is: zeros after start-up, then the last vector that bench mode received.
 * Replace the body with a read of your sensor (ADC samples, an IMU window, a microphone
 * frame, already scaled and quantized to the model's input) to run the model on live data. */
#include "mcuforge_app.h"

void mcuforge_input_fill(uint8_t *buffer, uint32_t bytes, uint32_t iteration)
{
    (void)buffer;
    (void)bytes;
    (void)iteration;
}
