//! Drawing into the bootloader's framebuffer: filled rectangles and text, for every pixel
//! format the bootloader can report.

use bootloader_api::info::{FrameBufferInfo, PixelFormat};

use super::font::{self, GLYPH_HEIGHT, GLYPH_WIDTH};

/// A colour: its RGB value and the grey level used on a greyscale framebuffer. The grey
/// levels are chosen per colour (not computed from RGB) so that colours that mean
/// different things stay apart on a greyscale screen too.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Colour {
    /// Red.
    pub r: u8,
    /// Green.
    pub g: u8,
    /// Blue.
    pub b: u8,
    /// Grey level for `U8` framebuffers.
    pub grey: u8,
}

impl Colour {
    /// A colour from its RGB value (`0xRRGGBB`) and its grey level.
    pub const fn new(rgb: u32, grey: u8) -> Colour {
        Colour {
            r: (rgb >> 16) as u8,
            g: (rgb >> 8) as u8,
            b: rgb as u8,
            grey,
        }
    }

    /// The RGB value, `0xRRGGBB`.
    pub const fn rgb(self) -> u32 {
        (self.r as u32) << 16 | (self.g as u32) << 8 | self.b as u32
    }
}

/// How a pixel is stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    /// Red, green, blue bytes (then padding).
    Rgb,
    /// Blue, green, red bytes (then padding): what QEMU's VGA gives.
    Bgr,
    /// One grey byte (then padding).
    Grey,
    /// A little-endian pixel value with 8-bit channels at these bit offsets.
    Bits {
        /// Bit offset of red.
        red: u8,
        /// Bit offset of green.
        green: u8,
        /// Bit offset of blue.
        blue: u8,
    },
}

/// The most bytes a pixel may have.
pub const MAX_BYTES_PER_PIXEL: usize = 4;

/// The bytes of one pixel of `colour`; a framebuffer uses the first `bytes_per_pixel`
/// of them (the rest is padding, or the unused top of a `Bits` pixel).
pub fn encode(format: Format, colour: Colour) -> [u8; MAX_BYTES_PER_PIXEL] {
    let mut px = [0u8; MAX_BYTES_PER_PIXEL];
    match format {
        Format::Rgb => px[..3].copy_from_slice(&[colour.r, colour.g, colour.b]),
        Format::Bgr => px[..3].copy_from_slice(&[colour.b, colour.g, colour.r]),
        Format::Grey => px[0] = colour.grey,
        Format::Bits { red, green, blue } => {
            let value = u32::from(colour.r) << red
                | u32::from(colour.g) << green
                | u32::from(colour.b) << blue;
            px = value.to_le_bytes();
        }
    }
    px
}

/// Reads back the colour of pixel bytes (grey pixels give `r == g == b == grey`).
pub fn decode(format: Format, px: &[u8]) -> (u8, u8, u8) {
    let byte = |i: usize| px.get(i).copied().unwrap_or(0);
    match format {
        Format::Rgb => (byte(0), byte(1), byte(2)),
        Format::Bgr => (byte(2), byte(1), byte(0)),
        Format::Grey => (byte(0), byte(0), byte(0)),
        Format::Bits { red, green, blue } => {
            let mut v = [0u8; 4];
            for (i, b) in v.iter_mut().enumerate() {
                *b = byte(i);
            }
            let value = u32::from_le_bytes(v);
            let channel = |shift: u8| (value >> shift) as u8;
            (channel(red), channel(green), channel(blue))
        }
    }
}

/// Why a framebuffer cannot be drawn on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CanvasError {
    /// Too few bytes for the pixel format, or more than [`MAX_BYTES_PER_PIXEL`].
    BytesPerPixel(usize),
    /// The buffer is shorter than `stride * height` pixels, or the stride below the width.
    Size,
}

/// A framebuffer to draw on. Everything outside it is clipped.
pub struct Canvas<'a> {
    buf: &'a mut [u8],
    width: usize,
    height: usize,
    /// Bytes from one line to the next.
    pitch: usize,
    bytes_per_pixel: usize,
    format: Format,
}

impl<'a> Canvas<'a> {
    /// A canvas over `buf`, laid out as `info` says.
    pub fn new(buf: &'a mut [u8], info: FrameBufferInfo) -> Result<Canvas<'a>, CanvasError> {
        let format = match info.pixel_format {
            PixelFormat::Rgb => Format::Rgb,
            PixelFormat::Bgr => Format::Bgr,
            PixelFormat::U8 => Format::Grey,
            PixelFormat::Unknown {
                red_position,
                green_position,
                blue_position,
            } => Format::Bits {
                red: red_position,
                green: green_position,
                blue: blue_position,
            },
            // `PixelFormat` is non-exhaustive; a new format would most likely be RGB.
            _ => Format::Rgb,
        };
        Canvas::from_parts(
            buf,
            info.width,
            info.height,
            info.stride,
            info.bytes_per_pixel,
            format,
        )
    }

    /// A canvas over `buf` with the given geometry (`stride` in pixels).
    pub fn from_parts(
        buf: &'a mut [u8],
        width: usize,
        height: usize,
        stride: usize,
        bytes_per_pixel: usize,
        format: Format,
    ) -> Result<Canvas<'a>, CanvasError> {
        // Enough bytes for the format's channels, and no more than `encode` fills.
        let needed_bytes = match format {
            Format::Rgb | Format::Bgr => 3,
            Format::Grey => 1,
            Format::Bits { red, green, blue } => (usize::from(red.max(green).max(blue)) + 15) / 8,
        };
        if bytes_per_pixel < needed_bytes || bytes_per_pixel > MAX_BYTES_PER_PIXEL {
            return Err(CanvasError::BytesPerPixel(bytes_per_pixel));
        }
        let pitch = stride * bytes_per_pixel;
        let needed = pitch.checked_mul(height).ok_or(CanvasError::Size)?;
        if stride < width || buf.len() < needed {
            return Err(CanvasError::Size);
        }
        Ok(Canvas {
            buf,
            width,
            height,
            pitch,
            bytes_per_pixel,
            format,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixel format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes per pixel.
    pub fn bytes_per_pixel(&self) -> usize {
        self.bytes_per_pixel
    }

    /// Fills `w` x `h` pixels from `(x, y)` with `colour`.
    pub fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, colour: Colour) {
        let w = w.min(self.width.saturating_sub(x));
        let h = h.min(self.height.saturating_sub(y));
        if w == 0 || h == 0 {
            return;
        }
        let bpp = self.bytes_per_pixel;
        let px = encode(self.format, colour);
        // Write the first line pixel by pixel, then copy it to the others.
        let first = y * self.pitch + x * bpp;
        let len = w * bpp;
        for p in self.buf[first..first + len].chunks_exact_mut(bpp) {
            p.copy_from_slice(&px[..bpp]);
        }
        for line in 1..h {
            let to = first + line * self.pitch;
            self.buf.copy_within(first..first + len, to);
        }
    }

    /// Fills the whole canvas.
    pub fn clear(&mut self, colour: Colour) {
        self.fill_rect(0, 0, self.width, self.height, colour);
    }

    /// The colour at `(x, y)` as `(r, g, b)`, read back from the buffer.
    pub fn pixel(&self, x: usize, y: usize) -> Option<(u8, u8, u8)> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let at = y * self.pitch + x * self.bytes_per_pixel;
        Some(decode(
            self.format,
            &self.buf[at..at + self.bytes_per_pixel],
        ))
    }

    /// Draws `text` with its top left corner at `(x, y)`, each font pixel `scale` pixels
    /// square, on a `bg` box. Returns the x just after the text.
    pub fn text(
        &mut self,
        x: usize,
        y: usize,
        text: &str,
        scale: usize,
        fg: Colour,
        bg: Colour,
    ) -> usize {
        let advance = font::advance(scale);
        let mut cx = x;
        for c in text.chars() {
            if cx >= self.width {
                break;
            }
            self.fill_rect(cx, y, advance, font::line_height(scale), bg);
            let rows = font::glyph(c);
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..GLYPH_WIDTH {
                    if bits & (1 << (GLYPH_WIDTH - 1 - col)) != 0 {
                        self.fill_rect(cx + col * scale, y + row * scale, scale, scale, fg);
                    }
                }
            }
            cx += advance;
        }
        debug_assert!(GLYPH_HEIGHT * scale <= font::line_height(scale));
        cx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: Colour = Colour::new(0xe03c31, 0x70);
    const BLUE: Colour = Colour::new(0x3d6bff, 0x58);

    #[test_case]
    fn pixel_formats() {
        assert_eq!(encode(Format::Rgb, RED)[..3], [0xe0, 0x3c, 0x31]);
        assert_eq!(encode(Format::Bgr, RED)[..4], [0x31, 0x3c, 0xe0, 0]);
        assert_eq!(encode(Format::Grey, RED)[0], 0x70);
        let bits = Format::Bits {
            red: 0,
            green: 8,
            blue: 16,
        };
        assert_eq!(encode(bits, RED), [0xe0, 0x3c, 0x31, 0]);
        for format in [Format::Rgb, Format::Bgr, bits] {
            assert_eq!(decode(format, &encode(format, BLUE)), (0x3d, 0x6b, 0xff));
        }
        assert_eq!(
            decode(Format::Grey, &encode(Format::Grey, BLUE)),
            (0x58, 0x58, 0x58)
        );
    }

    #[test_case]
    fn unusable_geometry_is_refused() {
        let mut buf = [0u8; 64];
        let mut canvas = |w, h, stride, bpp, format| {
            Canvas::from_parts(&mut buf, w, h, stride, bpp, format).err()
        };
        assert_eq!(canvas(4, 4, 4, 4, Format::Bgr), None);
        assert_eq!(
            canvas(4, 4, 4, 2, Format::Rgb),
            Some(CanvasError::BytesPerPixel(2))
        );
        assert_eq!(
            canvas(2, 2, 2, 5, Format::Rgb),
            Some(CanvasError::BytesPerPixel(5))
        );
        assert_eq!(canvas(4, 4, 4, 1, Format::Grey), None);
        let high = Format::Bits {
            red: 24,
            green: 16,
            blue: 8,
        };
        assert_eq!(
            canvas(4, 4, 4, 3, high),
            Some(CanvasError::BytesPerPixel(3))
        );
        assert_eq!(canvas(4, 4, 4, 4, high), None);
        assert_eq!(
            canvas(5, 4, 4, 3, Format::Rgb),
            Some(CanvasError::Size),
            "stride < width"
        );
        assert_eq!(
            canvas(4, 5, 4, 4, Format::Rgb),
            Some(CanvasError::Size),
            "buffer too short"
        );
    }

    /// Fills and text on a 10x10 canvas with 3 and 4 bytes a pixel and a padded stride,
    /// checked against a plain per-pixel model.
    #[test_case]
    fn rectangles_and_text_land_where_they_should() {
        for bpp in [3, 4] {
            let (w, h, stride) = (10, 10, 12);
            let mut buf = [0xaau8; 12 * 10 * 4];
            let mut c = Canvas::from_parts(&mut buf, w, h, stride, bpp, Format::Bgr).unwrap();
            c.clear(BLUE);
            c.fill_rect(2, 3, 3, 2, RED);
            c.fill_rect(8, 8, 5, 5, RED); // clipped at the edges
            for y in 0..h {
                for x in 0..w {
                    let red = (2..5).contains(&x) && (3..5).contains(&y) || x >= 8 && y >= 8;
                    let want = if red {
                        (0xe0, 0x3c, 0x31)
                    } else {
                        (0x3d, 0x6b, 0xff)
                    };
                    assert_eq!(c.pixel(x, y), Some(want), "({x}, {y}), {bpp} bytes a pixel");
                }
            }
            assert_eq!(c.pixel(10, 0), None);
            // `1` at scale 1 from (1, 1): row 0 of its glyph is `00100`.
            let end = c.text(1, 1, "1", 1, RED, BLUE);
            assert_eq!(end, 1 + font::advance(1));
            for (x, want_red) in [(1, false), (2, false), (3, true), (4, false)] {
                let want = if want_red {
                    (0xe0, 0x3c, 0x31)
                } else {
                    (0x3d, 0x6b, 0xff)
                };
                assert_eq!(c.pixel(x, 1), Some(want), "glyph pixel ({x}, 1)");
            }
            // The padding between lines is never written.
            let pitch = stride * bpp;
            assert!(buf[w * bpp..pitch].iter().all(|&b| b == 0xaa));
        }
    }
}
