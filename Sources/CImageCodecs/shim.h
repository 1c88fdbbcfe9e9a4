#ifndef FLAMINGO_CIMAGECODECS_SHIM_H
#define FLAMINGO_CIMAGECODECS_SHIM_H
#include <stdio.h>
#include <png.h>
#include <jpeglib.h>
#endif
