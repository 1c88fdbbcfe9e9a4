#ifndef FLAMINGO_CPROTOBUFC_SHIM_H
#define FLAMINGO_CPROTOBUFC_SHIM_H
#include <protobuf-c/protobuf-c.h>
#endif
