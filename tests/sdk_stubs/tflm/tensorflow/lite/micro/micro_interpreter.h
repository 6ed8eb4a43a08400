// Stub of TFLM's micro_interpreter.h: declarations only (see ../../../../README.md).
#pragma once
#include <stddef.h>
#include <stdint.h>
typedef enum TfLiteStatus { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef union TfLitePtrUnion { int8_t *int8; uint8_t *uint8; float *f; void *raw; } TfLitePtrUnion;
typedef struct TfLiteTensor { int type; TfLitePtrUnion data; void *dims; size_t bytes; } TfLiteTensor;
namespace tflite {
struct Model { uint32_t version() const; };
class MicroOpResolver { public: virtual ~MicroOpResolver() = default; };
class MicroResourceVariables;
class MicroProfilerInterface;
class MicroInterpreter {
 public:
  MicroInterpreter(const Model *model, const MicroOpResolver &op_resolver, uint8_t *tensor_arena, size_t tensor_arena_size,
                   MicroResourceVariables *resource_variables = nullptr, MicroProfilerInterface *profiler = nullptr,
                   bool preserve_all_tensors = false);
  virtual ~MicroInterpreter();
  TfLiteStatus AllocateTensors();
  TfLiteStatus Invoke();
  size_t inputs_size() const;
  size_t outputs_size() const;
  TfLiteTensor *input(size_t index);
  TfLiteTensor *output(size_t index);
};
}  // namespace tflite
