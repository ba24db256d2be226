// JPEG (Debian's libjpeg-turbo) and PNG (libspng) files decoded into Images, and the channel
// conversions a model's input needs. Every unreadable, truncated or oversized file is an
// InputError naming it; a build without one of the libraries says so for that format.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "exfusion/data/image.h"

namespace exfusion {

// Decoded images may hold at most this many pixels (a 16k × 16k photo), so a small file
// declaring an absurd size fails before anything is allocated.
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 28;

// Decodes a JPEG or PNG file given as its bytes (told apart by their signatures): grey images
// as 1 channel, colour as 3, with transparency as 4. `where` names the file in errors.
Image decode_image(std::string_view bytes, const std::string& where);
Image read_image_file(const std::filesystem::path& path);

// Converts to `channels` as Pillow's Image.convert does: "L" = (19595 R + 38470 G + 7471 B +
// 2^15) >> 16, "RGB" from grey repeats it, and alpha is dropped (not composited), as
// torchvision's ImageFolder loader (convert("RGB")) does.
Image convert_channels(Image image, int64_t channels);

}  // namespace exfusion
