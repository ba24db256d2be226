// Image decoding (see image_decode.h): libjpeg-turbo's TurboJPEG API with warnings treated as
// errors (a truncated JPEG is refused, not padded with grey) and libspng with size limits set
// before decoding. Each library is optional at build time (EXFUSION_WITH_JPEG / _PNG).
#include "exfusion/data/image_decode.h"

#include <memory>
#include <stdexcept>

#include "exfusion/util/error.h"
#include "exfusion/util/file_bytes.h"

#ifdef EXFUSION_WITH_JPEG
#include <turbojpeg.h>
#endif
#ifdef EXFUSION_WITH_PNG
#include <spng.h>
#endif

namespace exfusion {
namespace {

bool has_prefix(std::string_view bytes, std::string_view signature) {
  return bytes.substr(0, signature.size()) == signature;
}

void check_size(int64_t width, int64_t height, const std::string& where) {
  if (width < 1 || height < 1 || width * height > kMaxImagePixels) {
    throw InputError(where + ": image size " + std::to_string(width) + "×" +
                     std::to_string(height) + ", expected at least 1×1 and at most " +
                     std::to_string(kMaxImagePixels) + " pixels");
  }
}

#ifdef EXFUSION_WITH_JPEG
Image decode_jpeg(std::string_view bytes, const std::string& where) {
  const std::unique_ptr<void, int (*)(tjhandle)> handle(tjInitDecompress(), tjDestroy);
  if (!handle) throw InputError(where + ": cannot start the JPEG decoder");
  auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto size = static_cast<unsigned long>(bytes.size());
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(handle.get(), data, size, &width, &height, &subsampling, &colorspace) !=
      0) {
    throw InputError(where + ": not a readable JPEG file (" + tjGetErrorStr2(handle.get()) + ")");
  }
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
    throw InputError(where + ": a CMYK JPEG, expected greyscale or colour (YCbCr/RGB)");
  }
  check_size(width, height, where);
  const bool grey = colorspace == TJCS_GRAY;
  Image image(height, width, grey ? 1 : 3);
  if (tjDecompress2(handle.get(), data, size, image.pixels.data(), width, 0, height,
                    grey ? TJPF_GRAY : TJPF_RGB, TJFLAG_STOPONWARNING) != 0) {
    throw InputError(where + ": damaged or truncated JPEG data (" + tjGetErrorStr2(handle.get()) +
                     ")");
  }
  return image;
}
#endif

#ifdef EXFUSION_WITH_PNG
Image decode_png(std::string_view bytes, const std::string& where) {
  const std::unique_ptr<spng_ctx, void (*)(spng_ctx*)> context(spng_ctx_new(0), spng_ctx_free);
  if (!context) throw InputError(where + ": cannot start the PNG decoder");
  const auto fail = [&](int code, const char* what) {
    throw InputError(where + ": " + what + " (" + spng_strerror(code) + ")");
  };
  spng_ctx* ctx = context.get();
  // Bounds before the header is read: libspng then refuses larger images and chunks itself.
  spng_set_image_limits(ctx, 1u << 16, 1u << 16);
  spng_set_chunk_limits(ctx, 1u << 26, 1u << 26);
  if (const int code = spng_set_png_buffer(ctx, bytes.data(), bytes.size())) {
    fail(code, "not a readable PNG file");
  }
  spng_ihdr header{};
  if (const int code = spng_get_ihdr(ctx, &header)) fail(code, "not a readable PNG file");
  check_size(header.width, header.height, where);
  spng_trns transparency{};
  const bool has_transparency = spng_get_trns(ctx, &transparency) == 0;
  const bool alpha = header.color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA ||
                     header.color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA || has_transparency;
  const bool grey =
      header.color_type == SPNG_COLOR_TYPE_GRAYSCALE && !alpha && header.bit_depth <= 8;
  const int format = grey ? SPNG_FMT_G8 : alpha ? SPNG_FMT_RGBA8 : SPNG_FMT_RGB8;
  Image image(header.height, header.width, grey ? 1 : alpha ? 4 : 3);
  size_t expected = 0;
  if (const int code = spng_decoded_image_size(ctx, format, &expected)) {
    fail(code, "cannot decode this PNG");
  }
  if (expected != image.pixels.size()) {
    throw InputError(where + ": unexpected decoded PNG size");
  }
  if (const int code = spng_decode_image(ctx, image.pixels.data(), image.pixels.size(), format,
                                         alpha ? SPNG_DECODE_TRNS : 0)) {
    fail(code, "damaged or truncated PNG data");
  }
  return image;
}
#endif

}  // namespace

Image decode_image(std::string_view bytes, const std::string& where) {
  if (has_prefix(bytes, "\xFF\xD8\xFF")) {
#ifdef EXFUSION_WITH_JPEG
    return decode_jpeg(bytes, where);
#else
    throw InputError(where +
                     ": a JPEG file, and this build has no JPEG decoder "
                     "(Debian: libturbojpeg0-dev, then rebuild)");
#endif
  }
  if (has_prefix(bytes, "\x89PNG\r\n\x1A\n")) {
#ifdef EXFUSION_WITH_PNG
    return decode_png(bytes, where);
#else
    throw InputError(where +
                     ": a PNG file, and this build has no PNG decoder "
                     "(Debian: libspng-dev, then rebuild)");
#endif
  }
  throw InputError(where + ": neither a JPEG nor a PNG file (expected their signature bytes)");
}

Image read_image_file(const std::filesystem::path& path) {
  return decode_image(read_file_bytes(path, "a JPEG or PNG image"), path.string());
}

Image convert_channels(Image image, int64_t channels) {
  if (image.channels == channels) return image;
  if (channels != 1 && channels != 3) {
    throw std::invalid_argument("convert_channels: to 1 or 3 channels, not " +
                                std::to_string(channels));
  }
  const int64_t pixels = image.height * image.width;
  Image out(image.height, image.width, channels);
  const uint8_t* in = image.pixels.data();
  uint8_t* o = out.pixels.data();
  const int64_t c = image.channels;
  for (int64_t p = 0; p < pixels; ++p, in += c, o += channels) {
    if (channels == 1) {
      // Pillow's ITU-R 601-2 luma in 16-bit fixed point; grey + alpha keeps the grey.
      o[0] = c < 3 ? in[0]
                   : static_cast<uint8_t>(
                         (19595u * in[0] + 38470u * in[1] + 7471u * in[2] + 0x8000u) >> 16);
    } else {
      for (int64_t k = 0; k < channels; ++k) o[k] = c < 3 ? in[0] : in[k];
    }
  }
  return out;
}

}  // namespace exfusion
