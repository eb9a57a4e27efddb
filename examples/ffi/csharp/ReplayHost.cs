// A C# (Mono) replay host of the ACE-Step C-ABI library: it runs no graph (RunCase.cs beside it runs a whole
// case on ONNX Runtime's C API), but replays recorded inputs of a py_ort run through the library's host logic
// (request preparation, noise, scheduler steps on recorded vt, post-processing, LM constraints on recorded logits,
// metadata) and writes the outputs for comparison with Python's, bit for bit (tests/test_ffi.py records them).
//
//   mcs -out:ReplayHost.exe ReplayHost.cs && LD_LIBRARY_PATH=<dir of libacestep_runtime.so> mono ReplayHost.exe DIR
//
// DIR holds case.json, xt.bin, vt.bin, audio_decoded.bin (float32) and optionally lm_options.json,
// lm_logits.bin (float32 [steps, V]) and lm_tokens.bin (int64); outputs go to DIR/out_*.
using System;
using System.IO;
using System.Runtime.InteropServices;
using System.Text;

static class Ace
{
    const string Lib = "acestep_runtime";
    [DllImport(Lib)] public static extern uint ace_abi_version();
    [DllImport(Lib)] public static extern IntPtr ace_last_error();
    [DllImport(Lib)] public static extern void ace_string_free(IntPtr s);
    [DllImport(Lib)] public static extern IntPtr ace_create_context(byte[] configJson);
    [DllImport(Lib)] public static extern void ace_free_context(IntPtr ctx);
    [DllImport(Lib)] public static extern int ace_prepare_request(IntPtr ctx, byte[] caseJson, out IntPtr outJson);
    [DllImport(Lib)] public static extern int ace_noise(IntPtr ctx, ulong[] seeds, UIntPtr n, UIntPtr frames, float[] output, UIntPtr len);
    [DllImport(Lib)] public static extern int ace_scheduler_step(IntPtr ctx, float[] xt, float[] vt, UIntPtr len, double dt, float[] output);
    [DllImport(Lib)] public static extern int ace_postprocess_audio(IntPtr ctx, float[] audio, UIntPtr len, UIntPtr batch, float[] output);
    [DllImport(Lib)] public static extern int ace_json_i64(byte[] json, byte[] path, long[] output, UIntPtr capacity, out UIntPtr count);
    [DllImport(Lib)] public static extern int ace_json_f64(byte[] json, byte[] path, double[] output, UIntPtr capacity, out UIntPtr count);
    [DllImport(Lib)] public static extern int ace_lm_reset(IntPtr ctx, byte[] optionsJson, out IntPtr outJson);
    [DllImport(Lib)] public static extern int ace_apply_lm_constraints(IntPtr ctx, float[] logits, UIntPtr vocab, float[] output);
    [DllImport(Lib)] public static extern int ace_lm_update(IntPtr ctx, uint token);
    [DllImport(Lib)] public static extern int ace_finalize_metadata(IntPtr ctx, long[] tokens, UIntPtr len, out IntPtr outJson);

    public static byte[] Utf8(string s) { return Encoding.UTF8.GetBytes(s + "\0"); }

    // Copy a library-owned string and free it (every char * the library returns is the caller's to free).
    public static string Take(IntPtr p)
    {
        if (p == IntPtr.Zero) return null;
        int n = 0;
        while (Marshal.ReadByte(p, n) != 0) n++;
        var bytes = new byte[n];
        Marshal.Copy(p, bytes, 0, n);
        ace_string_free(p);
        return Encoding.UTF8.GetString(bytes);
    }

    public static void Check(string call, int status)
    {
        if (status != 0) throw new Exception(call + " failed (" + status + "): " + Take(ace_last_error()));
    }

    public static long[] I64(string json, string path)
    {
        UIntPtr n;
        Check("ace_json_i64", ace_json_i64(Utf8(json), Utf8(path), null, UIntPtr.Zero, out n));
        var v = new long[(int)n];
        Check("ace_json_i64", ace_json_i64(Utf8(json), Utf8(path), v, n, out n));
        return v;
    }

    public static double[] F64(string json, string path)
    {
        UIntPtr n;
        Check("ace_json_f64", ace_json_f64(Utf8(json), Utf8(path), null, UIntPtr.Zero, out n));
        var v = new double[(int)n];
        Check("ace_json_f64", ace_json_f64(Utf8(json), Utf8(path), v, n, out n));
        return v;
    }
}

static class ReplayHost
{
    static float[] ReadF32(string path)
    {
        var b = File.ReadAllBytes(path);
        var v = new float[b.Length / 4];
        Buffer.BlockCopy(b, 0, v, 0, b.Length);
        return v;
    }

    static long[] ReadI64(string path)
    {
        var b = File.ReadAllBytes(path);
        var v = new long[b.Length / 8];
        Buffer.BlockCopy(b, 0, v, 0, b.Length);
        return v;
    }

    static void WriteF32(string path, float[] v)
    {
        var b = new byte[v.Length * 4];
        Buffer.BlockCopy(v, 0, b, 0, b.Length);
        File.WriteAllBytes(path, b);
    }

    static int Main(string[] args)
    {
        if (args.Length != 2) { Console.Error.WriteLine("usage: ReplayHost.exe ONNX_DIR REPLAY_DIR"); return 2; }
        string dir = args[1];
        if (Ace.ace_abi_version() != 1) throw new Exception("library ABI is not 1");
        IntPtr ctx = Ace.ace_create_context(Ace.Utf8("{\"onnx_dir\": \"" + args[0].Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"}"));
        if (ctx == IntPtr.Zero) throw new Exception("ace_create_context: " + Ace.Take(Ace.ace_last_error()));
        try
        {
            IntPtr p;
            Ace.Check("ace_prepare_request", Ace.ace_prepare_request(ctx, Ace.Utf8(File.ReadAllText(Path.Combine(dir, "case.json"))), out p));
            string req = Ace.Take(p);
            File.WriteAllText(Path.Combine(dir, "out_request.json"), req);
            long batch = Ace.I64(req, "batch")[0], frames = Ace.I64(req, "latent_frames")[0];
            long[] seedsI = Ace.I64(req, "seeds");
            var seeds = new ulong[seedsI.Length];
            for (int i = 0; i < seeds.Length; i++) seeds[i] = (ulong)seedsI[i];
            int n = (int)(batch * frames * 64);
            var noise = new float[n];
            Ace.Check("ace_noise", Ace.ace_noise(ctx, seeds, (UIntPtr)seeds.Length, (UIntPtr)frames, noise, (UIntPtr)n));
            WriteF32(Path.Combine(dir, "out_noise.bin"), noise);

            // scheduler steps on the recorded xt[i], vt[i] with the library's dt of each step
            double[] dts = Ace.F64(req, "dts");
            float[] xs = ReadF32(Path.Combine(dir, "xt.bin")), vs = ReadF32(Path.Combine(dir, "vt.bin"));
            var next = new float[xs.Length];
            var x = new float[n];
            var v = new float[n];
            var o = new float[n];
            for (int i = 0; i < dts.Length; i++)
            {
                Array.Copy(xs, i * n, x, 0, n);
                Array.Copy(vs, i * n, v, 0, n);
                Ace.Check("ace_scheduler_step", Ace.ace_scheduler_step(ctx, x, v, (UIntPtr)n, dts[i], o));
                Array.Copy(o, 0, next, i * n, n);
            }
            WriteF32(Path.Combine(dir, "out_xt_next.bin"), next);

            float[] decoded = ReadF32(Path.Combine(dir, "audio_decoded.bin"));
            var audio = new float[decoded.Length];
            Ace.Check("ace_postprocess_audio", Ace.ace_postprocess_audio(ctx, decoded, (UIntPtr)decoded.Length, (UIntPtr)batch, audio));
            WriteF32(Path.Combine(dir, "out_audio.bin"), audio);

            string lmOptions = Path.Combine(dir, "lm_options.json");
            if (File.Exists(lmOptions))
            {
                Ace.Check("ace_lm_reset", Ace.ace_lm_reset(ctx, Ace.Utf8(File.ReadAllText(lmOptions)), out p));
                string info = Ace.Take(p);
                File.WriteAllText(Path.Combine(dir, "out_lm_reset.json"), info);
                int vocab = (int)Ace.I64(info, "vocab_size")[0];
                float[] logits = ReadF32(Path.Combine(dir, "lm_logits.bin"));
                long[] tokens = ReadI64(Path.Combine(dir, "lm_tokens.bin"));
                var masked = new float[logits.Length];
                var row = new float[vocab];
                var outRow = new float[vocab];
                for (int i = 0; i < tokens.Length; i++)
                {
                    Array.Copy(logits, i * vocab, row, 0, vocab);
                    Ace.Check("ace_apply_lm_constraints", Ace.ace_apply_lm_constraints(ctx, row, (UIntPtr)vocab, outRow));
                    Array.Copy(outRow, 0, masked, i * vocab, vocab);
                    Ace.Check("ace_lm_update", Ace.ace_lm_update(ctx, (uint)tokens[i]));
                }
                WriteF32(Path.Combine(dir, "out_lm_masked.bin"), masked);
                Ace.Check("ace_finalize_metadata", Ace.ace_finalize_metadata(ctx, tokens, (UIntPtr)tokens.Length, out p));
                File.WriteAllText(Path.Combine(dir, "out_lm_final.json"), Ace.Take(p));
            }
            Console.WriteLine("{\"ok\": true, \"steps\": " + dts.Length + "}");
        }
        finally
        {
            Ace.ace_free_context(ctx);
        }
        return 0;
    }
}
