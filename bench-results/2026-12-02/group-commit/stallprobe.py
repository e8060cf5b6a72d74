import time, sys
end = time.monotonic() + float(sys.argv[1])
last = time.monotonic()
while True:
    time.sleep(0.002)
    now = time.monotonic()
    if now - last > 0.030:
        print(f"{time.strftime('%H:%M:%S')} gap {1000*(now-last):.1f} ms", flush=True)
    last = now
    if now > end: break
