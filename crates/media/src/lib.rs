//! Media building blocks for Reelsmith: YUV frame planes and their resampling and blending,
//! image decoding and fitting, text rasterisation, audio mixing and loudness, speech synthesis,
//! and FFmpeg subprocess I/O. Everything here is synchronous; callers run it on worker threads.

pub mod aac;
pub mod audio;
pub mod ffmpeg;
pub mod fmp4;
pub mod frame;
pub mod h264;
pub mod head;
pub mod mouth;
pub mod mp4box;
pub mod mp4join;
pub mod picture;
pub mod text;
pub mod tts;
pub mod x264;
