// Stub of TFLM's micro_mutable_op_resolver.h: the Add methods the test models use (see ../../../../README.md).
#pragma once
#include "tensorflow/lite/micro/micro_interpreter.h"
namespace tflite {
template <unsigned int tOpCount>
class MicroMutableOpResolver : public MicroOpResolver {
 public:
  TfLiteStatus AddFullyConnected();
  TfLiteStatus AddEthosU();
  TfLiteStatus AddQuantize();
  TfLiteStatus AddDequantize();
  TfLiteStatus AddSoftmax();
  TfLiteStatus AddReshape();
};
}  // namespace tflite
