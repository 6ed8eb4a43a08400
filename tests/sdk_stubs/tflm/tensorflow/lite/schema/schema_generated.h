// Stub of TFLite's schema_generated.h: declarations only (see ../../../../README.md).
#pragma once
#include "tensorflow/lite/micro/micro_interpreter.h"
#define TFLITE_SCHEMA_VERSION (3)
namespace tflite {
const Model *GetModel(const void *buf);
}  // namespace tflite
