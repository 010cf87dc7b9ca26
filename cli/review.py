"""``koala review OUT``: a small local server where an archivist pins the colours they know.

``/`` lists the output's results; ``/scan/<key>`` shows one: a click marks a point, the colour
comes from the colour picker or a typed colour name, and Save writes the hints file that the
next ``koala colorize`` run of this output reads (``tasks/review.py``). The pages are plain
HTML with inline script and style: nothing is fetched from outside (they work offline).
"""

from __future__ import annotations

import html
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import ImageColor

from koala.errors import KoalaError
from tasks.review import Result, current_hints, results, save_hints, shown_jpeg

STYLE = """body{font:15px system-ui,sans-serif;margin:1.5em;color:#222}
#stage{position:relative;display:inline-block;cursor:crosshair}
#pic{width:min(100%,1000px);height:auto;display:block}
.mark{position:absolute;border:2px solid #fff;outline:1px solid #000;pointer-events:none}
.point{width:10px;height:10px;border-radius:50%;transform:translate(-50%,-50%)}
.swatch{display:inline-block;width:1em;height:1em;border:1px solid #000;vertical-align:middle}
#tools{margin:.8em 0}#tools>*{margin-right:1em}#status{font-weight:600}
.grid a{display:inline-block;margin:6px;text-align:center;font-size:12px;color:#222}
.grid img{width:200px;display:block}"""

SCRIPT = """const pic=document.getElementById('pic'),stage=document.getElementById('stage');
const list=document.getElementById('list'),status=document.getElementById('status');
const named=document.getElementById('named'),picker=document.getElementById('colour');
function colourOf(){return named.value.trim()||picker.value}
named.addEventListener('input',()=>{const c=document.createElement('canvas').getContext('2d');
  const v=named.value.trim();c.fillStyle='#010203';c.fillStyle=v;
  if(v&&c.fillStyle!=='#010203')picker.value=c.fillStyle});  // the picker shows the name
picker.addEventListener('input',()=>{named.value=''});  // a picked colour replaces the name
function mark(h){const m=document.createElement('span');m.className='mark';
  m.style.background=h.colour;
  if('box'in h){const[l,t,r,b]=h.box;Object.assign(m.style,{left:100*l/W+'%',top:100*t/H+'%',
    width:100*(r-l)/W+'%',height:100*(b-t)/H+'%',opacity:.6})}
  else{m.classList.add('point');m.style.left=100*(h.x+.5)/W+'%';m.style.top=100*(h.y+.5)/H+'%'}
  stage.appendChild(m)}
function draw(){stage.querySelectorAll('.mark').forEach(m=>m.remove());list.innerHTML='';
  hints.forEach((h,i)=>{mark(h);const li=document.createElement('li');
    const where='box'in h?'box '+h.box.join(', '):'point '+h.x+', '+h.y;
    li.innerHTML='<span class=swatch></span> ';li.firstChild.style.background=h.colour;
    li.append(h.colour+' at '+where+' ');const b=document.createElement('button');
    b.textContent='remove';b.onclick=()=>{hints.splice(i,1);draw();status.textContent='not saved'};
    li.append(b);list.appendChild(li)})}
pic.addEventListener('click',e=>{const r=pic.getBoundingClientRect();
  const x=Math.min(W-1,Math.floor((e.clientX-r.left)/r.width*W));
  const y=Math.min(H-1,Math.floor((e.clientY-r.top)/r.height*H));
  hints.push({x:x,y:y,colour:colourOf()});draw();status.textContent='not saved'});
document.getElementById('save').onclick=async()=>{status.textContent='saving';
  const res=await fetch(SAVE,{method:'POST',headers:{'Content-Type':'application/json'},
    body:JSON.stringify({hints:hints})});const j=await res.json();
  status.textContent=res.ok?'saved: '+j.path:'not saved: '+j.error};
draw();"""


def _page(title: str, body: str) -> bytes:
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}"
        f"</title><style>{STYLE}</style></head><body>{body}</body></html>"
    ).encode()


def index_page(output: str, found: list[Result]) -> bytes:
    """The output's results, each a link to its review."""
    items = "".join(
        f"<a href='/scan/{r.key}'><img loading=lazy src='/image/{r.key}?side=400' "
        f"alt='{html.escape(r.name)}'>{html.escape(r.name)}"
        f"{f' ({r.hints} hints)' if r.hints else ''}</a>"
        for r in found
    )
    head = (
        f"<h1>Pin the colours you know: {html.escape(output)}</h1><p>Open a result, click "
        "where you know the colour, pick it and save; the next <code>koala colorize</code> "
        "run of this output honours it.</p>"
    )
    return _page("Koala review", f"{head}<div class=grid>{items}</div>")


def scan_page(result: Result, hints: list) -> bytes:
    """One result: the picture to click, the colour tools and the hints so far."""
    names = "".join(f"<option value='{n}'>" for n in sorted(ImageColor.colormap))
    data = json.dumps([h.to_dict() for h in hints]).replace("</", "<\\/")
    setup = f"const W={result.width},H={result.height},SAVE='/hints/{result.key}';"
    body = (
        f"<p><a href='/'>all results</a></p><h1>{html.escape(result.name)}</h1><p>Click the "
        "picture where you know the colour, with the colour picked or named; Save writes the "
        "hints, and the next <code>koala colorize</code> run of this output honours them.</p>"
        "<div id=tools><label>Colour <input type=color id=colour value='#3a5f2b'></label>"
        "<label>or a colour name <input id=named list=names placeholder=navy></label>"
        "<button id=save>Save hints</button><span id=status></span></div>"
        f"<div id=stage><img id=pic src='/image/{result.key}' alt='{html.escape(result.name)}'>"
        f"</div><ol id=list></ol><datalist id=names>{names}</datalist>"
        f"<script>{setup}let hints={data};{SCRIPT}</script>"
    )
    return _page(f"Koala review: {result.name}", body)


def make_server(output: str, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """The review server of ``output`` (not yet serving)."""
    found = {r.key: r for r in results(output)}  # fails now, in one line, without an index

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, doc: dict) -> None:
            self._send(code, json.dumps(doc).encode(), "application/json")

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            kind, _, key = url.path.strip("/").partition("/")
            if url.path == "/":
                return self._send(200, index_page(output, list(found.values())), "text/html")
            if key not in found:
                return self._send(404, b"no such result", "text/plain")
            if kind == "scan":
                page = scan_page(found[key], current_hints(output, found[key]))
                return self._send(200, page, "text/html; charset=utf-8")
            if kind == "image":
                side = int(parse_qs(url.query).get("side", ["0"])[0] or 0)
                return self._send(200, shown_jpeg(found[key], side or None), "image/jpeg")
            return self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            kind, _, key = urlsplit(self.path).path.strip("/").partition("/")
            if kind != "hints" or key not in found:
                return self._json(404, {"error": "no such result"})
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                path = save_hints(output, found[key], data)
            except KoalaError as exc:
                return self._json(400, {"error": str(exc)})
            return self._json(200, {"path": path})

    return ThreadingHTTPServer((host, port), Handler)
