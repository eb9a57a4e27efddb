// A C# (Mono) host of the ACE-Step C-ABI library that runs one text2music case end to end, as run_case.c does:
// ONNX Runtime through its C API (the pip wheel's libonnxruntime, loaded by path with dlopen; OrtGetApiBase() ->
// GetApi(23) -> the OrtApi table of function pointers, called through delegates), every other step through
// libacestep_runtime (P/Invoke). Writes every capture point as .npy files (the names of the Python runtime's
// captures) and the first item as OUT_DIR/out.wav, then prints one JSON summary line. No NuGet package needed.
//
//   mcs -out:RunCase.exe RunCase.cs
//   LD_LIBRARY_PATH=<folder of libacestep_runtime.so> mono RunCase.exe ONNX_DIR CASE_JSON LIBONNXRUNTIME OUT_DIR
//
// OUT_DIR is created with its parents. Wrong arguments: a usage line and exit status 2; a failed call: its
// message and exit status 1 (README.md).
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Runtime.InteropServices;
using System.Text;

static class Ace
{
    const string Lib = "acestep_runtime";
    [DllImport(Lib)] public static extern uint ace_abi_version();
    [DllImport(Lib)] public static extern IntPtr ace_version_string();
    [DllImport(Lib)] public static extern IntPtr ace_last_error();
    [DllImport(Lib)] public static extern void ace_string_free(IntPtr s);
    [DllImport(Lib)] public static extern IntPtr ace_create_context(byte[] configJson);
    [DllImport(Lib)] public static extern void ace_free_context(IntPtr ctx);
    [DllImport(Lib)] public static extern int ace_prepare_request(IntPtr ctx, byte[] caseJson, out IntPtr outJson);
    [DllImport(Lib)] public static extern int ace_noise(IntPtr ctx, ulong[] seeds, UIntPtr n, UIntPtr frames, float[] output, UIntPtr len);
    [DllImport(Lib)] public static extern int ace_context_latents(IntPtr ctx, UIntPtr frames, UIntPtr batch, float[] output, UIntPtr len);
    [DllImport(Lib)] public static extern int ace_timbre_reference(IntPtr ctx, UIntPtr batch, float[] output, UIntPtr len);
    [DllImport(Lib)] public static extern int ace_prepare_step_inputs(IntPtr ctx, byte[] state, float[] t, UIntPtr len, out IntPtr outJson);
    [DllImport(Lib)] public static extern int ace_scheduler_step(IntPtr ctx, float[] xt, float[] vt, UIntPtr len, double dt, float[] output);
    [DllImport(Lib)] public static extern int ace_tile_window(IntPtr ctx, float[] latents, UIntPtr len, UIntPtr batch, UIntPtr frames, UIntPtr item, UIntPtr tile, float[] output, UIntPtr outLen);
    [DllImport(Lib)] public static extern int ace_tile_trim(IntPtr ctx, UIntPtr frames, UIntPtr tile, UIntPtr decoded, out UIntPtr start, out UIntPtr end);
    [DllImport(Lib)] public static extern int ace_postprocess_audio(IntPtr ctx, float[] audio, UIntPtr len, UIntPtr batch, float[] output);
    [DllImport(Lib)] public static extern int ace_write_wav(IntPtr ctx, byte[] path, float[] audio, UIntPtr len, UIntPtr channels);
    [DllImport(Lib)] public static extern int ace_json_i64(byte[] json, byte[] path, long[] output, UIntPtr capacity, out UIntPtr count);
    [DllImport(Lib)] public static extern int ace_json_f64(byte[] json, byte[] path, double[] output, UIntPtr capacity, out UIntPtr count);

    public static byte[] Utf8(string s) { return Encoding.UTF8.GetBytes(s + "\0"); }

    // Copy a library-owned string and free it (every char * the library returns is the caller's to free).
    public static string Take(IntPtr p)
    {
        if (p == IntPtr.Zero) return null;
        string s = Native.Utf8At(p);
        ace_string_free(p);
        return s;
    }

    public static void Check(string call, int status)
    {
        if (status != 0) throw new HostError(call + " failed (" + status + "): " + Take(ace_last_error()));
    }

    public static long[] I64(string json, string path)
    {
        UIntPtr n;
        Check("ace_json_i64 " + path, ace_json_i64(Utf8(json), Utf8(path), null, UIntPtr.Zero, out n));
        var v = new long[(int)n];
        Check("ace_json_i64 " + path, ace_json_i64(Utf8(json), Utf8(path), v, n, out n));
        return v;
    }

    public static double[] F64(string json, string path)
    {
        UIntPtr n;
        Check("ace_json_f64 " + path, ace_json_f64(Utf8(json), Utf8(path), null, UIntPtr.Zero, out n));
        var v = new double[(int)n];
        Check("ace_json_f64 " + path, ace_json_f64(Utf8(json), Utf8(path), v, n, out n));
        return v;
    }

    public static bool HasF64(string json, string path)
    {
        UIntPtr n;
        return ace_json_f64(Utf8(json), Utf8(path), null, UIntPtr.Zero, out n) == 0;
    }
}

class HostError : Exception
{
    public HostError(string message) : base(message) { }
}

static class Native
{
    [DllImport("libdl.so.2")] public static extern IntPtr dlopen(string file, int mode);
    [DllImport("libdl.so.2")] public static extern IntPtr dlsym(IntPtr handle, string name);
    [DllImport("libdl.so.2")] public static extern IntPtr dlerror();
    public const int RTLD_NOW = 2;

    public static string Utf8At(IntPtr p)
    {
        if (p == IntPtr.Zero) return null;
        int n = 0;
        while (Marshal.ReadByte(p, n) != 0) n++;
        var bytes = new byte[n];
        Marshal.Copy(p, bytes, 0, n);
        return Encoding.UTF8.GetString(bytes);
    }
}

// Slots of the OrtApi struct (onnxruntime_c_api.h of ONNX Runtime 1.23: the function's offset / sizeof(void *)).
// tests/test_ffi.py checks every slot against offsetof() of the header the C host is built with.
static class OrtSlot
{
    public const int GetErrorMessage = 2;
    public const int CreateEnv = 3;
    public const int CreateSession = 7;
    public const int Run = 9;
    public const int CreateSessionOptions = 10;
    public const int SetSessionExecutionMode = 13;
    public const int SessionGetInputTypeInfo = 33;
    public const int SetSessionLogSeverityLevel = 22;
    public const int SetSessionGraphOptimizationLevel = 23;
    public const int SetIntraOpNumThreads = 24;
    public const int SetInterOpNumThreads = 25;
    public const int SessionGetOutputName = 37;
    public const int CreateTensorWithDataAsOrtValue = 49;
    public const int GetTensorMutableData = 51;
    public const int CastTypeInfoToTensorInfo = 55;
    public const int GetTensorElementType = 60;
    public const int GetDimensionsCount = 61;
    public const int GetDimensions = 62;
    public const int GetTensorShapeElementCount = 64;
    public const int GetTensorTypeAndShape = 65;
    public const int CreateCpuMemoryInfo = 69;
    public const int AllocatorFree = 76;
    public const int GetAllocatorWithDefaultOptions = 78;
    public const int ReleaseEnv = 92;
    public const int ReleaseStatus = 93;
    public const int ReleaseMemoryInfo = 94;
    public const int ReleaseSession = 95;
    public const int ReleaseValue = 96;
    public const int ReleaseTypeInfo = 98;
    public const int ReleaseTensorTypeAndShapeInfo = 99;
    public const int ReleaseSessionOptions = 100;
}

// ONNX Runtime's C API through the OrtApi table: every entry a cdecl function pointer turned into a delegate.
class Ort
{
    public const int Float = 1, Int64 = 7, Bool = 9; // ONNXTensorElementDataType
    const uint ApiWanted = 23; // onnxruntime 1.23

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] delegate IntPtr GetApiBaseFn();
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] delegate IntPtr GetApiFn(uint version);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr StatusMessageFn(IntPtr status);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate void ReleaseFn(IntPtr obj);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr CreateEnvFn(int level, byte[] logId, out IntPtr env);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr CreateSessionFn(IntPtr env, byte[] path, IntPtr options, out IntPtr session);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr RunFn(IntPtr session, IntPtr runOptions, IntPtr[] inputNames, IntPtr[] inputs, UIntPtr nInputs, IntPtr[] outputNames, UIntPtr nOutputs, [Out] IntPtr[] outputs);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr OutFn(out IntPtr result);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr SetIntFn(IntPtr options, int value);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr IndexOutFn(IntPtr session, UIntPtr index, out IntPtr result);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr OutputNameFn(IntPtr session, UIntPtr index, IntPtr allocator, out IntPtr name);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr CreateTensorFn(IntPtr memoryInfo, IntPtr data, UIntPtr bytes, long[] shape, UIntPtr ndim, int type, out IntPtr value);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr ObjOutFn(IntPtr obj, out IntPtr result);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr ObjOutIntFn(IntPtr obj, out int result);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr ObjOutSizeFn(IntPtr obj, out UIntPtr result);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr GetDimensionsFn(IntPtr info, [Out] long[] dims, UIntPtr n);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr CpuMemoryInfoFn(int allocator, int memType, out IntPtr info);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate IntPtr AllocatorFreeFn(IntPtr allocator, IntPtr p);

    readonly IntPtr api;
    public Ort(string library)
    {
        IntPtr handle = Native.dlopen(library, Native.RTLD_NOW);
        if (handle == IntPtr.Zero) throw new HostError(Native.Utf8At(Native.dlerror()) ?? ("cannot load " + library));
        IntPtr sym = Native.dlsym(handle, "OrtGetApiBase");
        if (sym == IntPtr.Zero) throw new HostError("OrtGetApiBase not found in " + library);
        IntPtr baseStruct = Marshal.GetDelegateForFunctionPointer<GetApiBaseFn>(sym)();
        // struct OrtApiBase { const OrtApi *(*GetApi)(uint32_t); const char *(*GetVersionString)(void); }
        api = Marshal.GetDelegateForFunctionPointer<GetApiFn>(Marshal.ReadIntPtr(baseStruct, 0))(ApiWanted);
        if (api == IntPtr.Zero) throw new HostError("this libonnxruntime does not offer ORT API 23");
        GetErrorMessage = Fn<StatusMessageFn>(OrtSlot.GetErrorMessage);
        ReleaseStatus = Fn<ReleaseFn>(OrtSlot.ReleaseStatus);
    }

    public T Fn<T>(int slot) where T : class
    {
        return Marshal.GetDelegateForFunctionPointer<T>(Marshal.ReadIntPtr(api, slot * IntPtr.Size));
    }

    readonly StatusMessageFn GetErrorMessage;
    readonly ReleaseFn ReleaseStatus;

    public void Check(IntPtr status, string call)
    {
        if (status == IntPtr.Zero) return;
        string message = Native.Utf8At(GetErrorMessage(status));
        ReleaseStatus(status);
        throw new HostError(call + ": " + message);
    }
}

// One output of a Run: the OrtValue (owned here until released), its shape, element type and data pointer.
class Tensor
{
    public IntPtr Value;
    public long[] Dims;
    public int Type;
    public long Count;
    public IntPtr Data;
}

class Graphs : IDisposable
{
    readonly Ort ort;
    readonly Ort.RunFn run;
    readonly Ort.CreateTensorFn createTensor;
    readonly Ort.ReleaseFn releaseValue, releaseTypeInfo, releaseShapeInfo, releaseSession, releaseOptions, releaseEnv,
        releaseMemory;
    readonly Ort.ObjOutFn typeAndShape, mutableData, castTypeInfo;
    readonly Ort.ObjOutSizeFn dimsCount, elementCount;
    readonly Ort.ObjOutIntFn elementType;
    readonly Ort.GetDimensionsFn dimensions;
    readonly Ort.OutputNameFn outputName;
    readonly Ort.IndexOutFn inputTypeInfo;
    readonly Ort.AllocatorFreeFn allocatorFree;
    readonly IntPtr env, options, memory, allocator;
    readonly Dictionary<string, IntPtr> sessions = new Dictionary<string, IntPtr>();
    readonly List<GCHandle> pinned = new List<GCHandle>();

    public Graphs(Ort ort, string onnxDir, string[] names)
    {
        this.ort = ort;
        run = ort.Fn<Ort.RunFn>(OrtSlot.Run);
        createTensor = ort.Fn<Ort.CreateTensorFn>(OrtSlot.CreateTensorWithDataAsOrtValue);
        releaseValue = ort.Fn<Ort.ReleaseFn>(OrtSlot.ReleaseValue);
        releaseTypeInfo = ort.Fn<Ort.ReleaseFn>(OrtSlot.ReleaseTypeInfo);
        releaseShapeInfo = ort.Fn<Ort.ReleaseFn>(OrtSlot.ReleaseTensorTypeAndShapeInfo);
        releaseSession = ort.Fn<Ort.ReleaseFn>(OrtSlot.ReleaseSession);
        releaseOptions = ort.Fn<Ort.ReleaseFn>(OrtSlot.ReleaseSessionOptions);
        releaseEnv = ort.Fn<Ort.ReleaseFn>(OrtSlot.ReleaseEnv);
        releaseMemory = ort.Fn<Ort.ReleaseFn>(OrtSlot.ReleaseMemoryInfo);
        typeAndShape = ort.Fn<Ort.ObjOutFn>(OrtSlot.GetTensorTypeAndShape);
        mutableData = ort.Fn<Ort.ObjOutFn>(OrtSlot.GetTensorMutableData);
        castTypeInfo = ort.Fn<Ort.ObjOutFn>(OrtSlot.CastTypeInfoToTensorInfo);
        dimsCount = ort.Fn<Ort.ObjOutSizeFn>(OrtSlot.GetDimensionsCount);
        elementCount = ort.Fn<Ort.ObjOutSizeFn>(OrtSlot.GetTensorShapeElementCount);
        elementType = ort.Fn<Ort.ObjOutIntFn>(OrtSlot.GetTensorElementType);
        dimensions = ort.Fn<Ort.GetDimensionsFn>(OrtSlot.GetDimensions);
        outputName = ort.Fn<Ort.OutputNameFn>(OrtSlot.SessionGetOutputName);
        inputTypeInfo = ort.Fn<Ort.IndexOutFn>(OrtSlot.SessionGetInputTypeInfo);
        allocatorFree = ort.Fn<Ort.AllocatorFreeFn>(OrtSlot.AllocatorFree);

        ort.Check(ort.Fn<Ort.CreateEnvFn>(OrtSlot.CreateEnv)(3 /* ORT_LOGGING_LEVEL_ERROR */, Ace.Utf8("acestep"), out env), "CreateEnv");
        ort.Check(ort.Fn<Ort.OutFn>(OrtSlot.CreateSessionOptions)(out options), "CreateSessionOptions");
        // the options of the Python runtime (acestep_ort.session_manager.SessionConfig)
        string threads = Environment.GetEnvironmentVariable("ACESTEP_ORT_THREADS");
        int intra = 0;
        if (!string.IsNullOrEmpty(threads) && !int.TryParse(threads, out intra))
            throw new HostError("ACESTEP_ORT_THREADS is not an integer: " + threads);
        ort.Check(ort.Fn<Ort.SetIntFn>(OrtSlot.SetIntraOpNumThreads)(options, intra), "SetIntraOpNumThreads");
        ort.Check(ort.Fn<Ort.SetIntFn>(OrtSlot.SetInterOpNumThreads)(options, 1), "SetInterOpNumThreads");
        ort.Check(ort.Fn<Ort.SetIntFn>(OrtSlot.SetSessionExecutionMode)(options, 0 /* ORT_SEQUENTIAL */), "SetSessionExecutionMode");
        ort.Check(ort.Fn<Ort.SetIntFn>(OrtSlot.SetSessionGraphOptimizationLevel)(options, 99 /* ORT_ENABLE_ALL */), "SetSessionGraphOptimizationLevel");
        ort.Check(ort.Fn<Ort.SetIntFn>(OrtSlot.SetSessionLogSeverityLevel)(options, 3), "SetSessionLogSeverityLevel");
        ort.Check(ort.Fn<Ort.CpuMemoryInfoFn>(OrtSlot.CreateCpuMemoryInfo)(1 /* OrtArenaAllocator */, 0 /* OrtMemTypeDefault */, out memory), "CreateCpuMemoryInfo");
        ort.Check(ort.Fn<Ort.OutFn>(OrtSlot.GetAllocatorWithDefaultOptions)(out allocator), "GetAllocatorWithDefaultOptions");
        var createSession = ort.Fn<Ort.CreateSessionFn>(OrtSlot.CreateSession);
        foreach (string name in names)
        {
            string path = Path.Combine(onnxDir, name + ".onnx");
            IntPtr session;
            ort.Check(createSession(env, Ace.Utf8(path), options, out session), path);
            sessions[name] = session;
        }
    }

    // A tensor over a managed array, pinned until Release (ONNX Runtime reads the array in place).
    public IntPtr Input(Array data, long[] shape, int type)
    {
        var handle = GCHandle.Alloc(data, GCHandleType.Pinned);
        pinned.Add(handle);
        long bytes = (long)Buffer.ByteLength(data);
        IntPtr value;
        ort.Check(createTensor(memory, handle.AddrOfPinnedObject(), (UIntPtr)bytes, shape, (UIntPtr)shape.Length, type, out value), "CreateTensor");
        return value;
    }

    public void Release(IntPtr value) { releaseValue(value); }

    // Unpin every array given to Input (after the values over them are released).
    public void Unpin()
    {
        foreach (var h in pinned) h.Free();
        pinned.Clear();
    }

    public int InputType(string graph, int index)
    {
        IntPtr typeInfo, tensorInfo;
        int type;
        ort.Check(inputTypeInfo(sessions[graph], (UIntPtr)index, out typeInfo), "SessionGetInputTypeInfo");
        ort.Check(castTypeInfo(typeInfo, out tensorInfo), "CastTypeInfoToTensorInfo");
        ort.Check(elementType(tensorInfo, out type), "GetTensorElementType");
        releaseTypeInfo(typeInfo);
        return type;
    }

    // Run a graph on named inputs; returns its first nOut outputs.
    public Tensor[] Run(string graph, string[] names, IntPtr[] inputs, int nOut)
    {
        IntPtr session = sessions[graph];
        var inNames = new IntPtr[names.Length];
        var outNames = new IntPtr[nOut];
        var outputs = new IntPtr[nOut];
        try
        {
            for (int i = 0; i < names.Length; i++) inNames[i] = Marshal.StringToHGlobalAnsi(names[i]);
            for (int i = 0; i < nOut; i++) ort.Check(outputName(session, (UIntPtr)i, allocator, out outNames[i]), "SessionGetOutputName");
            ort.Check(run(session, IntPtr.Zero, inNames, inputs, (UIntPtr)inputs.Length, outNames, (UIntPtr)nOut, outputs), "Run " + graph);
        }
        finally
        {
            foreach (IntPtr p in inNames) if (p != IntPtr.Zero) Marshal.FreeHGlobal(p);
            foreach (IntPtr p in outNames) if (p != IntPtr.Zero) ort.Check(allocatorFree(allocator, p), "AllocatorFree");
        }
        var result = new Tensor[nOut];
        for (int i = 0; i < nOut; i++) result[i] = Describe(outputs[i]);
        return result;
    }

    Tensor Describe(IntPtr value)
    {
        IntPtr info;
        UIntPtr ndim, count;
        int type;
        ort.Check(typeAndShape(value, out info), "GetTensorTypeAndShape");
        ort.Check(dimsCount(info, out ndim), "GetDimensionsCount");
        var dims = new long[(int)ndim];
        ort.Check(dimensions(info, dims, ndim), "GetDimensions");
        ort.Check(elementType(info, out type), "GetTensorElementType");
        ort.Check(elementCount(info, out count), "GetTensorShapeElementCount");
        releaseShapeInfo(info);
        IntPtr data;
        ort.Check(mutableData(value, out data), "GetTensorMutableData");
        return new Tensor { Value = value, Dims = dims, Type = type, Count = (long)count, Data = data };
    }

    public static float[] Floats(Tensor t)
    {
        if (t.Type != Float) throw new HostError("expected a float tensor, got element type " + t.Type);
        var v = new float[t.Count];
        Marshal.Copy(t.Data, v, 0, v.Length);
        return v;
    }

    const int Float = Ort.Float;

    public void Dispose()
    {
        foreach (IntPtr s in sessions.Values) releaseSession(s);
        sessions.Clear();
        releaseMemory(memory);
        releaseOptions(options);
        releaseEnv(env);
        Unpin();
    }
}

static class Npy
{
    // numpy's .npy v1.0: magic, header length, a dict padded with spaces to a multiple of 64, then the data
    public static void Write(string dir, string name, string descr, Array data, long[] shape)
    {
        string dims = shape.Length == 1 ? shape[0] + "," : string.Join(", ", Array.ConvertAll(shape, d => d.ToString(CultureInfo.InvariantCulture)));
        string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
        int pad = (64 - (10 + header.Length + 1) % 64) % 64;
        header += new string(' ', pad) + "\n";
        using (var f = new FileStream(Path.Combine(dir, name + ".npy"), FileMode.Create, FileAccess.Write))
        {
            f.Write(new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0 }, 0, 8);
            f.Write(BitConverter.GetBytes((ushort)header.Length), 0, 2);
            byte[] h = Encoding.ASCII.GetBytes(header);
            f.Write(h, 0, h.Length);
            var bytes = new byte[Buffer.ByteLength(data)];
            Buffer.BlockCopy(data, 0, bytes, 0, bytes.Length);
            f.Write(bytes, 0, bytes.Length);
        }
    }
}

static class RunCase
{
    const string Usage = "usage: mono RunCase.exe ONNX_DIR CASE_JSON LIBONNXRUNTIME OUT_DIR";
    static readonly string[] GraphNames = { "text_encoder", "lyric_embedding", "condition_encoder", "dit_decoder", "vae_decoder" };

    static int Main(string[] args)
    {
        if (args.Length != 4) { Console.Error.WriteLine(Usage); return 2; }
        try
        {
            Console.WriteLine(Run(args[0], args[1], args[2], args[3]));
            return 0;
        }
        catch (DllNotFoundException)
        {
            Console.Error.WriteLine("RunCase: libacestep_runtime.so not found: put its folder on LD_LIBRARY_PATH");
            return 1;
        }
        catch (Exception e) when (e is HostError || e is IOException || e is UnauthorizedAccessException
                                  || e is EntryPointNotFoundException)
        {
            Console.Error.WriteLine("RunCase: " + e.Message);
            return 1;
        }
    }

    static string JsonString(string s)
    {
        var b = new StringBuilder("\"");
        foreach (char c in s)
        {
            if (c == '"' || c == '\\') b.Append('\\').Append(c);
            else if (c < 0x20) b.Append("\\u").Append(((int)c).ToString("x4"));
            else b.Append(c);
        }
        return b.Append('"').ToString();
    }

    static long[] Shape(string json, string path) { return Ace.I64(json, path); }
    static long Prod(long[] shape) { long n = 1; foreach (long d in shape) n *= d; return n; }
    static string R(double v) { return v.ToString("R", CultureInfo.InvariantCulture); }

    // A bool mask as the element type a graph input declares (bool, int64 or float); the array to pin.
    static IntPtr Mask(Graphs g, byte[] mask, long[] shape, int type)
    {
        if (type == Ort.Bool) return g.Input(mask, shape, Ort.Bool);
        if (type == Ort.Int64) return g.Input(Array.ConvertAll(mask, m => (long)m), shape, Ort.Int64);
        return g.Input(Array.ConvertAll(mask, m => m != 0 ? 1.0f : 0.0f), shape, Ort.Float);
    }

    static string Run(string onnxDir, string casePath, string ortLibrary, string outDir)
    {
        Directory.CreateDirectory(outDir);
        if (Ace.ace_abi_version() != 1) throw new HostError("library ABI is not 1");
        var ort = new Ort(ortLibrary);
        IntPtr ctx = Ace.ace_create_context(Ace.Utf8("{\"onnx_dir\": " + JsonString(onnxDir) + "}"));
        if (ctx == IntPtr.Zero) throw new HostError("ace_create_context: " + Ace.Take(Ace.ace_last_error()));
        try
        {
            string caseText = File.ReadAllText(casePath);
            IntPtr p;
            Ace.Check("ace_prepare_request", Ace.ace_prepare_request(ctx, Ace.Utf8(caseText), out p));
            string req = Ace.Take(p);
            using (var g = new Graphs(ort, onnxDir, GraphNames))
                return Generate(ctx, g, caseText, req, outDir);
        }
        finally
        {
            Ace.ace_free_context(ctx);
        }
    }

    static string Generate(IntPtr ctx, Graphs g, string caseText, string req, string outDir)
    {
        long batch = Ace.I64(req, "batch")[0], frames = Ace.I64(req, "latent_frames")[0];
        long steps = Ace.I64(req, "steps")[0], nTiles = Ace.I64(req, "n_tiles")[0];

        // token ids and masks
        long[] textIds = Ace.I64(req, "text_token_ids.data"), lyricIds = Ace.I64(req, "lyric_token_ids.data");
        long[] tshape = Shape(req, "text_token_ids.shape"), lshape = Shape(req, "lyric_token_ids.shape");
        byte[] textMask = Array.ConvertAll(Ace.I64(req, "text_attention_mask.data"), m => (byte)m);
        byte[] lyricMask = Array.ConvertAll(Ace.I64(req, "lyric_attention_mask.data"), m => (byte)m);
        Npy.Write(outDir, "text_token_ids", "<i8", textIds, tshape);
        Npy.Write(outDir, "text_attention_mask", "|b1", textMask, tshape);
        Npy.Write(outDir, "lyric_token_ids", "<i8", lyricIds, lshape);
        Npy.Write(outDir, "lyric_attention_mask", "|b1", lyricMask, lshape);

        string[] ids = { "input_ids" };
        IntPtr input = g.Input(textIds, tshape, Ort.Int64);
        Tensor textH = g.Run("text_encoder", ids, new[] { input }, 1)[0];
        g.Release(input);
        Npy.Write(outDir, "text_hidden_states", "<f4", Graphs.Floats(textH), textH.Dims);
        input = g.Input(lyricIds, lshape, Ort.Int64);
        Tensor lyricH = g.Run("lyric_embedding", ids, new[] { input }, 1)[0];
        g.Release(input);
        Npy.Write(outDir, "lyric_hidden_states", "<f4", Graphs.Floats(lyricH), lyricH.Dims);

        // condition encoder
        long[] timbreShape = Shape(req, "timbre_reference_shape");
        var timbre = new float[Prod(timbreShape)];
        Ace.Check("ace_timbre_reference", Ace.ace_timbre_reference(ctx, (UIntPtr)batch, timbre, (UIntPtr)timbre.Length));
        var cin = new[] {
            textH.Value, Mask(g, textMask, tshape, g.InputType("condition_encoder", 1)),
            lyricH.Value, Mask(g, lyricMask, lshape, g.InputType("condition_encoder", 3)),
            g.Input(timbre, timbreShape, Ort.Float),
        };
        Tensor[] cond = g.Run("condition_encoder", new[] { "text_hidden_states", "text_attention_mask",
            "lyric_hidden_states", "lyric_attention_mask", "timbre_reference" }, cin, 2);
        foreach (int i in new[] { 1, 3, 4 }) g.Release(cin[i]);
        g.Release(textH.Value);
        g.Release(lyricH.Value);
        Tensor enc = cond[0], encMask = cond[1];
        Npy.Write(outDir, "encoder_hidden_states", "<f4", Graphs.Floats(enc), enc.Dims);
        var em = new byte[encMask.Count];
        if (encMask.Type == Ort.Float)
        {
            float[] m = Graphs.Floats(encMask);
            for (int i = 0; i < em.Length; i++) em[i] = (byte)(m[i] != 0.0f ? 1 : 0);
        }
        else
            for (int i = 0; i < em.Length; i++)
                em[i] = (byte)((encMask.Type == Ort.Int64 ? Marshal.ReadInt64(encMask.Data, i * 8) : Marshal.ReadByte(encMask.Data, i)) != 0 ? 1 : 0);
        Npy.Write(outDir, "encoder_attention_mask", "|b1", em, encMask.Dims);
        g.Release(encMask.Value);

        // context latents, schedule, noise
        long[] ctxShape = Shape(req, "context_latents_shape");
        var ctxLat = new float[Prod(ctxShape)];
        Ace.Check("ace_context_latents", Ace.ace_context_latents(ctx, (UIntPtr)frames, (UIntPtr)batch, ctxLat, (UIntPtr)ctxLat.Length));
        Npy.Write(outDir, "context_latents", "<f4", ctxLat, ctxShape);
        double[] sched = Ace.F64(req, "schedule");
        var sched32 = new float[steps];
        for (long i = 0; i < steps; i++) sched32[i] = (float)sched[i];
        Npy.Write(outDir, "schedule", "<f4", sched32, new[] { steps });
        ulong[] seeds = Array.ConvertAll(Ace.I64(req, "seeds"), s => (ulong)s);
        long[] latShape = { batch, frames, 64 };
        long n = batch * frames * 64;
        var xt = new float[n];
        Ace.Check("ace_noise", Ace.ace_noise(ctx, seeds, (UIntPtr)seeds.Length, (UIntPtr)frames, xt, (UIntPtr)n));
        Npy.Write(outDir, "noise", "<f4", xt, latShape);

        // the denoising loop: the library gives t and dt, the host runs the DiT, the library steps
        var xs = new float[steps * n];
        var vs = new float[steps * n];
        string timesteps = "null";
        if (Ace.HasF64(caseText, "timesteps"))
            timesteps = "[" + string.Join(", ", Array.ConvertAll(Ace.F64(caseText, "timesteps"), R)) + "]";
        double shift = Ace.HasF64(caseText, "shift") ? Ace.F64(caseText, "shift")[0] : 1.0;
        string[] ditNames = { "hidden_states", "timestep", "timestep_r", "encoder_hidden_states", "context_latents" };
        var t = new float[batch];
        var next = new float[n];
        IntPtr ctxValue = g.Input(ctxLat, ctxShape, Ort.Float);
        for (long i = 0; i < steps; i++)
        {
            string state = "{\"shift\": " + R(shift) + ", \"timesteps\": " + timesteps + ", \"step\": " + i + "}";
            IntPtr info;
            Ace.Check("ace_prepare_step_inputs", Ace.ace_prepare_step_inputs(ctx, Ace.Utf8(state), t, (UIntPtr)batch, out info));
            double dt = Ace.F64(Ace.Take(info), "dt")[0];
            Array.Copy(xt, 0, xs, i * n, n);
            var din = new[] { g.Input(xt, latShape, Ort.Float), g.Input(t, new[] { batch }, Ort.Float),
                              g.Input(t, new[] { batch }, Ort.Float), enc.Value, ctxValue };
            Tensor vt = g.Run("dit_decoder", ditNames, din, 1)[0];
            if (vt.Count != n) throw new HostError("dit_decoder returned a vt of another size");
            float[] v = Graphs.Floats(vt);
            Array.Copy(v, 0, vs, i * n, n);
            Ace.Check("ace_scheduler_step", Ace.ace_scheduler_step(ctx, xt, v, (UIntPtr)n, dt, next));
            g.Release(vt.Value);
            foreach (int k in new[] { 0, 1, 2 }) g.Release(din[k]);
            Array.Copy(next, xt, n);
        }
        g.Release(ctxValue);
        g.Release(enc.Value);
        g.Unpin();
        long[] stacked = { steps, batch, frames, 64 };
        Npy.Write(outDir, "xt", "<f4", xs, stacked);
        Npy.Write(outDir, "vt", "<f4", vs, stacked);
        Npy.Write(outDir, "pred_latents", "<f4", xt, latShape);

        // tiled VAE decode: windows and trims from the library
        var items = new List<float[]>[batch];
        long channels = 0, samples = 0;
        for (long b = 0; b < batch; b++)
        {
            var rows = new List<float[]>();
            long filled = 0;
            var pieces = new List<Tuple<float[], long, long, long>>();
            for (long k = 0; k < nTiles; k++)
            {
                long width = Ace.I64(req, "tiles." + k + ".win_end")[0] - Ace.I64(req, "tiles." + k + ".win_start")[0];
                var win = new float[width * 64];
                Ace.Check("ace_tile_window", Ace.ace_tile_window(ctx, xt, (UIntPtr)n, (UIntPtr)batch, (UIntPtr)frames,
                    (UIntPtr)b, (UIntPtr)k, win, (UIntPtr)win.Length));
                IntPtr w = g.Input(win, new[] { 1L, 64, width }, Ort.Float);
                Tensor dec = g.Run("vae_decoder", new[] { "latents" }, new[] { w }, 1)[0];
                g.Release(w);
                long len = dec.Dims[2];
                UIntPtr start, end;
                Ace.Check("ace_tile_trim", Ace.ace_tile_trim(ctx, (UIntPtr)frames, (UIntPtr)k, (UIntPtr)len, out start, out end));
                channels = dec.Dims[1];
                pieces.Add(Tuple.Create(Graphs.Floats(dec), len, (long)start, (long)end));
                filled += (long)end - (long)start;
                g.Release(dec.Value);
                g.Unpin();
            }
            // item-major, channel-major: each channel's [start, end) of every tile, in order
            for (long c = 0; c < channels; c++)
            {
                var row = new float[filled];
                long at = 0;
                foreach (var piece in pieces)
                {
                    Array.Copy(piece.Item1, c * piece.Item2 + piece.Item3, row, at, piece.Item4 - piece.Item3);
                    at += piece.Item4 - piece.Item3;
                }
                rows.Add(row);
            }
            items[b] = rows;
            samples = filled;
        }
        var decoded = new float[batch * channels * samples];
        for (long b = 0; b < batch; b++)
            for (long c = 0; c < channels; c++)
                Array.Copy(items[b][(int)c], 0, decoded, (b * channels + c) * samples, samples);
        long[] audioShape = { batch, channels, samples };
        Npy.Write(outDir, "audio_decoded", "<f4", decoded, audioShape);
        var audio = new float[decoded.Length];
        Ace.Check("ace_postprocess_audio", Ace.ace_postprocess_audio(ctx, decoded, (UIntPtr)decoded.Length, (UIntPtr)batch, audio));
        Npy.Write(outDir, "audio", "<f4", audio, audioShape);
        string wav = Path.Combine(outDir, "out.wav");
        Ace.Check("ace_write_wav", Ace.ace_write_wav(ctx, Ace.Utf8(wav), audio, (UIntPtr)(channels * samples), (UIntPtr)channels));
        string id = RequestId(req);
        return "{\"library\": " + JsonString(Ace.Take(Ace.ace_version_string())) + ", \"case\": " + JsonString(id)
            + ", \"batch\": " + batch + ", \"frames\": " + frames + ", \"steps\": " + steps + ", \"samples\": " + samples + "}";
    }

    // The request's "id" string (the library's compact JSON writes it as the second key; JSON-unescaped here
    // only for \" and \\, enough for the summary line).
    static string RequestId(string req)
    {
        int at = req.IndexOf("\"id\":", StringComparison.Ordinal);
        if (at < 0) return "?";
        int start = req.IndexOf('"', at + 5);
        if (start < 0) return "?";
        var b = new StringBuilder();
        for (int i = start + 1; i < req.Length; i++)
        {
            if (req[i] == '\\' && i + 1 < req.Length) { b.Append(req[++i]); continue; }
            if (req[i] == '"') return b.ToString();
            b.Append(req[i]);
        }
        return "?";
    }
}
