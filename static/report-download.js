/* Report downloads that take a while (the PDFs): a link marked data-prepare fetches its file
   and says "Preparing PDF…" until the download arrives. Without JavaScript, or when the fetch
   fails, it stays a plain link: the browser follows it and shows what the server said. */
(function () {
  "use strict";
  function filename(response, fallback) {
    var header = response.headers.get("Content-Disposition") || "";
    var star = /filename\*=UTF-8''([^;]+)/i.exec(header);
    if (star) return decodeURIComponent(star[1]);
    var plain = /filename="?([^";]+)"?/i.exec(header);
    return plain ? plain[1] : fallback;
  }
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-prepare]");
    if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    if (link.getAttribute("aria-busy") === "true") return;
    var label = link.innerHTML;
    link.setAttribute("aria-busy", "true");
    link.setAttribute("aria-disabled", "true");
    link.classList.add("preparing");
    link.textContent = link.getAttribute("data-prepare") || "Preparing…";
    function done() {
      link.innerHTML = label;
      link.removeAttribute("aria-busy");
      link.removeAttribute("aria-disabled");
      link.classList.remove("preparing");
    }
    fetch(link.href, { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.blob().then(function (blob) {
          var url = URL.createObjectURL(blob);
          var save = document.createElement("a");
          save.href = url;
          save.download = filename(response, "report.pdf");
          document.body.appendChild(save);
          save.click();
          save.remove();
          setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
          done();
        });
      })
      .catch(function () { done(); window.location.href = link.href; });
  });
})();
