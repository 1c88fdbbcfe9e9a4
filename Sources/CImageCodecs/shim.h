#ifndef FLAMINGO_CIMAGECODECS_SHIM_H
#define FLAMINGO_CIMAGECODECS_SHIM_H
/*
 * Image decoding through the system libpng and libjpeg (libjpeg-turbo), from memory.
 *
 * Both libraries report fatal errors by longjmp, which Swift cannot catch, so the whole decode of
 * one image runs here in C and returns a status code plus a message. Swift (Image/ImageDecoder.swift)
 * is the only caller; it converts the raw samples (1-4 channels, 8 or 16 bits) to RGB.
 *
 * Each decoder first reads the header, checks the dimensions against the caller's limits and only
 * then allocates the pixel buffer, so a hostile header cannot make us allocate gigabytes.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <png.h>
#include <jpeglib.h>
#include <jerror.h>

enum {
    FLAMINGO_IMAGE_OK = 0,
    FLAMINGO_IMAGE_CORRUPT = 1,      /* the codec rejected the data; message says why */
    FLAMINGO_IMAGE_TRUNCATED = 2,    /* the data ended before the image did */
    FLAMINGO_IMAGE_TOO_LARGE = 3,    /* width/height are set; over the caller's limits */
    FLAMINGO_IMAGE_ZERO_SIZE = 4,    /* width or height is zero */
    FLAMINGO_IMAGE_UNSUPPORTED = 5,  /* a valid file we do not convert (e.g. CMYK JPEG) */
    FLAMINGO_IMAGE_NO_MEMORY = 6,
};

/* A decoded image: `height` rows of `width * channels` samples; 16-bit samples are big-endian. */
typedef struct flamingo_image {
    uint8_t *pixels;        /* malloc'd; release with flamingo_image_free */
    uint32_t width;
    uint32_t height;
    uint32_t channels;      /* 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA */
    uint32_t bit_depth;     /* 8 or 16 */
    uint32_t grey_source;   /* 1 when the file stores greyscale (PNG colour types 0/4, grey JPEG) */
    uint32_t has_key;       /* 16-bit PNG with a tRNS colour key, not expanded to alpha: */
    uint16_t key[3];        /* the key (grey in key[0]), for Swift to apply PIL's rule */
    char message[JMSG_LENGTH_MAX + 64];
} flamingo_image;

static inline void flamingo_image_free(flamingo_image *image) {
    free(image->pixels);
    image->pixels = NULL;
}

static inline int flamingo_dimensions_ok(uint64_t width, uint64_t height, uint64_t max_side,
                                         uint64_t max_pixels) {
    return width <= max_side && height <= max_side && width * height <= max_pixels;
}

/* ---------------------------------------------------------------------------------------- PNG */

typedef struct flamingo_png_state {
    const uint8_t *data;
    size_t size;
    size_t position;
    int truncated;
    png_bytep *rows;
    flamingo_image *out;
} flamingo_png_state;

static inline void flamingo_png_error(png_structp png, png_const_charp message) {
    flamingo_png_state *state = (flamingo_png_state *)png_get_error_ptr(png);
    snprintf(state->out->message, sizeof state->out->message, "%s", message);
    png_longjmp(png, 1);
}

static inline void flamingo_png_warning(png_structp png, png_const_charp message) {
    (void)png;
    (void)message; /* PIL ignores the same warnings (bad ancillary chunks, sRGB profile notes). */
}

static inline void flamingo_png_read(png_structp png, png_bytep into, size_t length) {
    flamingo_png_state *state = (flamingo_png_state *)png_get_io_ptr(png);
    if (length > state->size - state->position) {
        state->truncated = 1;
        png_error(png, "unexpected end of data");
    }
    memcpy(into, state->data + state->position, length);
    state->position += length;
}

/* Runs under setjmp; everything it changes lives in *state, outside this frame. */
static inline int flamingo_png_decode_guarded(png_structp png, png_infop info,
                                              flamingo_png_state *state, uint64_t max_side,
                                              uint64_t max_pixels) {
    if (setjmp(png_jmpbuf(png))) {
        return state->truncated ? FLAMINGO_IMAGE_TRUNCATED : FLAMINGO_IMAGE_CORRUPT;
    }
    png_set_read_fn(png, state, flamingo_png_read);
    /* Our own limits are checked below; raise libpng's so that it is not the one to refuse. */
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    /* Text, ICC profiles, calibration and suggested palettes never affect the pixels (PIL ignores
       them when converting to RGB), and libpng 1.6 allocates the length a text or pCAL/sCAL chunk
       header declares before reading its data, whatever the chunk memory limit says: a 128-byte
       file announcing a 1.4 GB iTXt chunk cost 1.4 GB of memory before it was found truncated
       (fuzz-image). Handled as unknown chunks that are never kept, they are skipped instead,
       read in small pieces and never inflated. */
    static const png_byte unused_chunks[] = "eXIf\0iCCP\0iTXt\0pCAL\0sCAL\0sPLT\0tEXt\0zTXt";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, unused_chunks, (int)(sizeof unused_chunks / 5));
    png_read_info(png, info);

    png_uint_32 width = png_get_image_width(png, info);
    png_uint_32 height = png_get_image_height(png, info);
    state->out->width = width;
    state->out->height = height;
    if (width == 0 || height == 0) {
        return FLAMINGO_IMAGE_ZERO_SIZE;
    }
    if (!flamingo_dimensions_ok(width, height, max_side, max_pixels)) {
        return FLAMINGO_IMAGE_TOO_LARGE;
    }

    /* Palette -> RGB, grey < 8 bits -> 8 bits (scaled like PIL's L;2/L;4/1 modes), tRNS -> alpha
       for 8-bit data. 16-bit samples are kept, and a 16-bit tRNS key is handed over rather than
       expanded: PIL treats both in its own way, which Swift reproduces. No gamma, no ICC: PIL
       ignores gAMA/iCCP when converting to RGB, and so do we. */
    int color_type = png_get_color_type(png, info);
    int source_depth = png_get_bit_depth(png, info);
    state->out->grey_source = (color_type & PNG_COLOR_MASK_COLOR) == 0;
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
        png_set_palette_to_rgb(png);
    }
    if (color_type == PNG_COLOR_TYPE_GRAY && source_depth < 8) {
        png_set_expand_gray_1_2_4_to_8(png);
    }
    if (png_get_valid(png, info, PNG_INFO_tRNS)) {
        png_color_16p key = NULL;
        if (source_depth == 16 && png_get_tRNS(png, info, NULL, NULL, &key) && key != NULL) {
            state->out->has_key = 1;
            if (color_type == PNG_COLOR_TYPE_GRAY) {
                state->out->key[0] = key->gray;
            } else {
                state->out->key[0] = key->red;
                state->out->key[1] = key->green;
                state->out->key[2] = key->blue;
            }
        } else if (source_depth != 16) {
            png_set_tRNS_to_alpha(png);
        }
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    uint32_t channels = png_get_channels(png, info);
    uint32_t bit_depth = png_get_bit_depth(png, info);
    size_t row_bytes = png_get_rowbytes(png, info);
    if (channels < 1 || channels > 4 || (bit_depth != 8 && bit_depth != 16) ||
        row_bytes != (size_t)width * channels * (bit_depth / 8)) {
        snprintf(state->out->message, sizeof state->out->message,
                 "unexpected layout after expansion: %u channels, %u bits", channels, bit_depth);
        return FLAMINGO_IMAGE_CORRUPT;
    }
    state->out->channels = channels;
    state->out->bit_depth = bit_depth;

    state->out->pixels = (uint8_t *)malloc(row_bytes * height);
    state->rows = (png_bytep *)malloc(sizeof(png_bytep) * height);
    if (state->out->pixels == NULL || state->rows == NULL) {
        return FLAMINGO_IMAGE_NO_MEMORY;
    }
    for (png_uint_32 y = 0; y < height; y++) {
        state->rows[y] = state->out->pixels + row_bytes * y;
    }
    png_read_image(png, state->rows);
    /* Trailing chunks after the image data are not read: like PIL, a missing IEND is tolerated. */
    return FLAMINGO_IMAGE_OK;
}

/// Decodes a PNG held in memory. On success `out->pixels` must be released with
/// flamingo_image_free; on failure it is NULL and `out->message` says why.
static inline int flamingo_png_decode(const uint8_t *data, size_t size, uint64_t max_side,
                                      uint64_t max_pixels, flamingo_image *out) {
    memset(out, 0, sizeof *out);
    flamingo_png_state state = {data, size, 0, 0, NULL, out};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, flamingo_png_error,
                                             flamingo_png_warning);
    if (png == NULL) {
        return FLAMINGO_IMAGE_NO_MEMORY;
    }
    png_infop info = png_create_info_struct(png);
    if (info == NULL) {
        png_destroy_read_struct(&png, NULL, NULL);
        return FLAMINGO_IMAGE_NO_MEMORY;
    }
    int status = flamingo_png_decode_guarded(png, info, &state, max_side, max_pixels);
    png_destroy_read_struct(&png, &info, NULL);
    free(state.rows);
    if (status != FLAMINGO_IMAGE_OK) {
        flamingo_image_free(out);
    }
    return status;
}

/* --------------------------------------------------------------------------------------- JPEG */

typedef struct flamingo_jpeg_error_manager {
    struct jpeg_error_mgr manager;
    jmp_buf jump;
    int status;
    char *message;
    size_t message_size;
} flamingo_jpeg_error_manager;

static inline void flamingo_jpeg_error_exit(j_common_ptr cinfo) {
    flamingo_jpeg_error_manager *errors = (flamingo_jpeg_error_manager *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    snprintf(errors->message, errors->message_size, "%s", text);
    int code = cinfo->err->msg_code;
    if (code == JERR_EMPTY_IMAGE) {
        errors->status = FLAMINGO_IMAGE_ZERO_SIZE;
    } else if (code == JERR_IMAGE_TOO_BIG) {
        errors->status = FLAMINGO_IMAGE_TOO_LARGE;
    } else if (code == JERR_OUT_OF_MEMORY) {
        errors->status = FLAMINGO_IMAGE_NO_MEMORY;
    } else if (code == JERR_INPUT_EMPTY || code == JERR_INPUT_EOF) {
        errors->status = FLAMINGO_IMAGE_TRUNCATED;
    } else {
        errors->status = FLAMINGO_IMAGE_CORRUPT;
    }
    longjmp(errors->jump, 1);
}

static inline void flamingo_jpeg_emit_message(j_common_ptr cinfo, int level) {
    if (level >= 0) {
        return; /* trace messages */
    }
    /* The memory source pads a short file with a fake EOI and only warns: libjpeg would then
       return grey rows for the missing part. PIL raises "image file is truncated"; so do we. */
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
        flamingo_jpeg_error_manager *errors = (flamingo_jpeg_error_manager *)cinfo->err;
        snprintf(errors->message, errors->message_size, "%s",
                 "premature end of JPEG data");
        errors->status = FLAMINGO_IMAGE_TRUNCATED;
        longjmp(errors->jump, 1);
    }
    cinfo->err->num_warnings++; /* other corrupt-data warnings are tolerated, as PIL does */
}

static inline void flamingo_jpeg_output_message(j_common_ptr cinfo) {
    (void)cinfo; /* never print to stderr */
}

/* Runs under setjmp; everything it changes lives in *cinfo and *out, outside this frame. */
static inline int flamingo_jpeg_decode_guarded(struct jpeg_decompress_struct *cinfo,
                                               flamingo_jpeg_error_manager *errors,
                                               const uint8_t *data, size_t size,
                                               uint64_t max_side, uint64_t max_pixels,
                                               flamingo_image *out) {
    if (setjmp(errors->jump)) {
        return errors->status;
    }
    jpeg_create_decompress(cinfo);
    jpeg_mem_src(cinfo, (const unsigned char *)data, (unsigned long)size);
    jpeg_read_header(cinfo, TRUE);
    out->width = cinfo->image_width;
    out->height = cinfo->image_height;
    if (cinfo->image_width == 0 || cinfo->image_height == 0) {
        return FLAMINGO_IMAGE_ZERO_SIZE;
    }
    if (!flamingo_dimensions_ok(cinfo->image_width, cinfo->image_height, max_side, max_pixels)) {
        return FLAMINGO_IMAGE_TOO_LARGE;
    }
    switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE:
        cinfo->out_color_space = JCS_GRAYSCALE;
        out->grey_source = 1;
        break;
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo->out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        snprintf(out->message, sizeof out->message, "%s",
                 "CMYK/YCCK JPEG is not supported; convert it to RGB");
        return FLAMINGO_IMAGE_UNSUPPORTED;
    default:
        snprintf(out->message, sizeof out->message, "unsupported JPEG colour space %d",
                 (int)cinfo->jpeg_color_space);
        return FLAMINGO_IMAGE_UNSUPPORTED;
    }
    /* libjpeg's defaults (JDCT_ISLOW, fancy upsampling) are what PIL decodes with. */
    jpeg_start_decompress(cinfo);
    uint32_t channels = (uint32_t)cinfo->output_components;
    if (channels != 1 && channels != 3) {
        snprintf(out->message, sizeof out->message, "unexpected %u output components", channels);
        return FLAMINGO_IMAGE_UNSUPPORTED;
    }
    size_t row_bytes = (size_t)cinfo->output_width * channels;
    out->width = cinfo->output_width;
    out->height = cinfo->output_height;
    out->channels = channels;
    out->bit_depth = 8;
    out->pixels = (uint8_t *)malloc(row_bytes * cinfo->output_height);
    if (out->pixels == NULL) {
        return FLAMINGO_IMAGE_NO_MEMORY;
    }
    while (cinfo->output_scanline < cinfo->output_height) {
        JSAMPROW row = out->pixels + row_bytes * cinfo->output_scanline;
        if (jpeg_read_scanlines(cinfo, &row, 1) != 1) {
            snprintf(out->message, sizeof out->message, "%s", "decoder returned no scanline");
            return FLAMINGO_IMAGE_CORRUPT;
        }
    }
    /* No jpeg_finish_decompress: a missing EOI after the last scanline is tolerated, as in PIL. */
    return FLAMINGO_IMAGE_OK;
}

/// Decodes a JPEG held in memory (greyscale or YCbCr/RGB colour). On success `out->pixels` must
/// be released with flamingo_image_free; on failure it is NULL and `out->message` says why.
static inline int flamingo_jpeg_decode(const uint8_t *data, size_t size, uint64_t max_side,
                                       uint64_t max_pixels, flamingo_image *out) {
    memset(out, 0, sizeof *out);
    struct jpeg_decompress_struct cinfo;
    flamingo_jpeg_error_manager errors;
    memset(&cinfo, 0, sizeof cinfo);
    memset(&errors, 0, sizeof errors);
    cinfo.err = jpeg_std_error(&errors.manager);
    errors.manager.error_exit = flamingo_jpeg_error_exit;
    errors.manager.emit_message = flamingo_jpeg_emit_message;
    errors.manager.output_message = flamingo_jpeg_output_message;
    errors.status = FLAMINGO_IMAGE_CORRUPT;
    errors.message = out->message;
    errors.message_size = sizeof out->message;
    int status = flamingo_jpeg_decode_guarded(&cinfo, &errors, data, size, max_side, max_pixels,
                                              out);
    jpeg_destroy_decompress(&cinfo);
    if (status != FLAMINGO_IMAGE_OK) {
        flamingo_image_free(out);
    }
    return status;
}

#endif
