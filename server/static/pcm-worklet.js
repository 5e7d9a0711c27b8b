// AudioWorklet: the microphone's float samples -> 16-bit little-endian PCM frames of ~100 ms,
// posted to the page, which sends them over the websocket. Runs on the audio thread, so it only
// converts and batches; the page does all networking.
class PcmWriter extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const frameMs = options.processorOptions?.frameMs ?? 100;
    this.frame = new Int16Array(Math.round((sampleRate * frameMs) / 1000));
    this.filled = 0;
    this.peak = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const first = channels[0];
    for (let i = 0; i < first.length; i++) {
      // Down-mix: the server takes mono.
      let sum = 0;
      for (const channel of channels) sum += channel[i];
      const value = Math.max(-1, Math.min(1, sum / channels.length));
      this.peak = Math.max(this.peak, Math.abs(value));
      this.frame[this.filled++] = value < 0 ? value * 0x8000 : value * 0x7fff;
      if (this.filled === this.frame.length) {
        const out = this.frame.slice();
        this.port.postMessage({ pcm: out.buffer, peak: this.peak }, [out.buffer]);
        this.filled = 0;
        this.peak = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-writer", PcmWriter);
