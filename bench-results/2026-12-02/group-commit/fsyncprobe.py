import os, time, sys
end = time.monotonic() + float(sys.argv[1])
fd = os.open("/var/tmp/fsyncprobe.dat", os.O_WRONLY | os.O_CREAT, 0o600)
buf = b"x" * 8192
n = 0; slow = 0; worst = 0.0
while time.monotonic() < end:
    t0 = time.monotonic()
    os.pwrite(fd, buf, (n % 128) * 8192)
    os.fdatasync(fd)
    dt = time.monotonic() - t0
    n += 1; worst = max(worst, dt)
    if dt > 0.020:
        slow += 1
        print(f"{time.strftime('%H:%M:%S')} fdatasync {1000*dt:.1f} ms", flush=True)
    time.sleep(0.02)
print(f"done n={n} slow={slow} worst={1000*worst:.1f} ms", flush=True)
