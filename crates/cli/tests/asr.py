"""Speech recognition for tests: prints what pocketsphinx (PyPI, bundled en-us model) hears in a
16 kHz mono 16-bit WAV file."""
import sys
import wave

from pocketsphinx import Decoder

w = wave.open(sys.argv[1])
d = Decoder(samprate=w.getframerate())
d.start_utt()
d.process_raw(w.readframes(w.getnframes()), full_utt=True)
d.end_utt()
print(d.hyp().hypstr if d.hyp() else "")
