"""StackGAN (Zhang et al., 2017): conditioning augmentation, Stage-I and Stage-II generators and discriminators.

Shapes (paper widths: ``gf=128``, ``df=64``, ``c_dim=128``, ``z_dim=100``, 4 residual blocks):

- :class:`CondAugment`  text embedding (B, t_dim) -> c (B, c_dim), mu, logvar; c = mu + sigma * eps.
- :class:`Stage1G`      z (B, 100) ++ c -> fc -> (B, 8gf, 4, 4) -> 4 up-blocks -> image (B, 3, 64, 64) in [-1, 1].
- :class:`Stage2G`      Stage-I image (B, 3, 64, 64) -> encoder (B, 4gf, 16, 16) ++ c -> joint conv -> residual
                        blocks -> up-blocks -> image (B, 3, 64 * 2**(n_up - 2), ...) (256 with 4 up-blocks); no z.
                        With ``skip`` (``Recipe.stage2_skip``) the output is a residual over the up-sampled input;
                        with ``keep_low`` (``Recipe.stage2_keep_low``) it pools back to the input (:func:`keep_low`).
- :class:`StageD`       image (B, 3, S, S) -> stride-2 convs -> features (B, 8df, 4, 4); the conditional head
                        concatenates mu (spatially replicated) -> conv3x3 -> conv4x4 -> matching-aware logit (B,),
                        the optional unconditional head conv4x4 -> logit (B,). Stage-I D is ``StageD(64)`` (conditional
                        head only), Stage-II D ``StageD(256, uncond=True)`` (both heads, two extra down-sampling convs
                        and two 3x3 reductions), as the official code.
                        ``match`` (``Recipe.contrastive``) adds a head scoring every image against every caption, ``parts``
                        (``Recipe.parts``) one naming each part's colour.

Every network starts from the official initialisation (:func:`weights_init`). The training choices -- loss,
wrong pairs, augmentation, EMA, spectral norm, projection head -- live in one :class:`Recipe`;
``RECIPES["paper"]`` is the official code's, ``RECIPES["stable"]`` adds established GAN stabilisers.

:func:`generate` samples both stages; with ``rerank=K`` it keeps, per caption, the best of K Stage-I candidates by
a judge of the part colours (:func:`part_scores`).

Up-blocks double the resolution by nearest-neighbour up-sampling + 3x3 conv (the default, as the
official code) or by a 3x3 conv to 4x the channels + ``PixelShuffle(2)`` initialised with ICNR
(Aitken et al., 2017), which starts out identical to nearest up-sampling and so avoids checkerboards.
"""
from __future__ import annotations

import copy
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwlib.divergences import kl_to_standard_normal
from hwlib.layout import is_channels_last
from hwlib.models import batch_norm_act, matmul_conv, upsample_conv

if TYPE_CHECKING:
    from hwlib.train import History


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per dimension: mu, logvar (B, c_dim) -> scalar.

    Averaged over the batch *and* the ``c_dim`` dimensions, as the official StackGAN code does
    (``KL_loss`` in StackGAN-Pytorch), so ``kl_coef = 2`` weighs it as the birds configuration does. The
    sum over dimensions is ``c_dim`` (128) times larger; with it, weight 2 squeezed the caption code to
    under one nat and the generator could not read the colours a caption names.
    """
    return kl_to_standard_normal(mu, logvar).mean()


def weights_init(m: nn.Module) -> None:
    """The official initialisation (``weights_init`` in StackGAN-Pytorch), for ``net.apply``: conv and linear
    weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
        nn.init.normal_(weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class Recipe:
    """Every training choice of a StackGAN stage; the defaults are the official code's.

    Every lever below was measured with all-MiniLM-L6-v2 caption embeddings. With the bag-of-ngrams encoder trained on
    the training captions (:class:`hwlib.text.NgramEncoder`) `stable` draws unseen species'
    body, wing, crown and belly at 0.73, 0.74, 0.58 and 0.75 (three seeds, 7,168 steps) against 0.50, 0.52, 0.29 and
    0.48: the sentence encoder, which blurs which colour belongs to which part, was what held the colours back. The
    levers from ``novel`` on were measured with that encoder; SynthBirds' default is now its version with a slot per
    part (``part-ngrams``), which raised notebook 01's "type a caption" score from 0.44 to 0.53 over five seeds at the
    same colours (``benchmarks/results/stackgan_sampling/rerank_pn_judge.json``).

    The levers below measured "on `stable`" before the part head (``parts``) joined it compare against that recipe
    without it: body 0.47, wing 0.43, crown 0.23, belly 0.28 on unseen species (three seeds, 7,168 steps).

    - ``loss``: ``"bce"`` (the paper's GAN loss on logits) or ``"hinge"`` (Lim & Ye 2017; Miyato et al. 2018).
    - ``wrong``: matching-aware negatives. ``"shift"``: the real images' D features with the captions shifted
      by one place in the batch (official, no extra D pass); ``"class"``: real images of another class, as
      the paper describes; ``"hardest"``: each real image with the batch's caption of another class whose text
      embedding is closest to its own (the hardest negative, as VSE++ picks them, Faghri et al. 2018): a random
      other caption almost always names another body colour, so D can tell wrong pairs by the largest part alone,
      while the closest one shares most colours and differs in a smaller part. Measured on the `stable` recipe at
      `quick`'s 7,168 steps over three seeds: belly 0.32 against 0.28, but body 0.41 against 0.47 and wing 0.40
      against 0.43, so `stable` keeps ``"shift"``; ``"swap"``: the official shifted pairs plus each real image with
      its own caption, one colour word swapped for another (:meth:`hwlib.data.cub.BirdSplit.swapped_embeddings`):
      a near miss that differs from the truth in one part only, so D must check every part the caption names, the
      crown as much as the body (needs a sentence encoder). Measured the same way: body 0.43, wing 0.39, crown 0.22,
      belly 0.31 against 0.47, 0.43, 0.23, 0.28 -- D trained on near misses still reads a real test bird's crown
      no better (``benchmarks/bench_stackgan_critic.py``: 0.62 against 0.63); ``"none"``: no wrong pairs (an unconditional or
      label-only ablation).
    - ``diffaug``: DiffAugment policy (Zhao et al. 2020) applied to every image D sees, real and fake:
      ``"translation,cutout"`` or ``""``. No colour policy: it would change the colours a caption names.
    - ``ema``: decay of an exponential moving average of G's weights to sample from (None: sample G). A longer
      average (0.999) with BatchNorm statistics re-estimated for the averaged weights (:func:`standing_stats`)
      measured body 0.47, wing 0.46, crown 0.22, belly 0.28 over three seeds against 0.47, 0.43, 0.23, 0.28: within
      the spread, so `stable` keeps 0.99 (``benchmarks/bench_stackgan_consistency.py --set ema=0.999 --standing-stats``).
    - ``spectral_norm``: spectral normalisation of every D weight, and no BatchNorm in D (Miyato et al. 2018).
    - ``projection``: the projection discriminator's conditional head (Miyato & Koyama 2018),
      ``psi(phi(x)) + <V mu, phi(x)>`` with ``phi`` D's sum-pooled features, instead of concatenating mu (True).
      ``"map"``: ``V`` maps mu to a whole (8df, 4, 4) map and the inner product is taken with D's 4x4 features
      before pooling, so the condition can ask for a colour at a place (a wing, a crown) instead of somewhere.
      Measured on the `stable` recipe at `quick`'s 7,168 steps over three seeds: attribute-feature FID 108 against
      116, but body 0.44 against 0.47, wing 0.41 against 0.43, belly 0.22 against 0.28, so `stable` keeps True.
    - ``lr_d``: D's learning rate as a multiple of G's (1: the paper's equal rates).
    - ``ca_logvar_init``: initial bias of the log-variance half of the conditioning augmentation (0: the
      official initialisation, sigma = 1). ``c = mu + sigma * eps``: with sigma = 1 and mu's spread ~0.4 at
      initialisation, the caption is a whisper under the noise until mu grows, which takes far more steps than
      a CPU run has; ``-4`` starts at sigma = 0.14 and lets the KL term raise it as the paper's does.
    - ``g_min_channels``: a floor on Stage-I G's channels per resolution (0: the paper's halving, which at
      ``gf = 16`` leaves 16 channels at 32x32 and 8 at 64x64 to paint four coloured parts).
    - ``g_cond_norm``: conditional batch norm in Stage-I G (de Vries et al. 2017; the generator Miyato & Koyama
      pair with the projection discriminator): every up-block's BN output is scaled and shifted by
      ``(1 + gamma(c), beta(c))``, linear in the CA sample ``c`` and zero at initialisation, so the caption reaches
      every resolution instead of only the first fully connected layer.
    - ``g_slots``: with ``g_cond_norm``, the scale and shift vary over the image (0: one pair per channel, as above):
      ``K`` pairs ``(gamma_k(c), beta_k(c))`` per up-block, and at every pixel a softmax over the ``K`` from a 1x1
      conv of the block's features picks their mix, so each region can read its own projection of the caption -- the
      sentence vector carries every part's colour linearly (section 8's probes), but one shift per channel paints
      them all the same way everywhere (attention over caption "slots" in the place of AttnGAN's word attention,
      Xu et al. 2018, for an encoder with no word features). The 1x1 convs start at zero (an even mix: the FiLM above).
      Measured with 4 slots on `stable`, two seeds (``rerank_slots4_judge``; a third was stopped): best of 16 at CA
      noise x2 body 0.75, wing 0.78, crown 0.53, belly 0.76, FID 64 against 0.745, 0.74, 0.53, 0.77, FID 71 at the same
      seeds, but the demo over 128 birds 0.31 (0.35, 0.27) against 0.50 (0.46, 0.55), the yellow bird with black wings
      drawn in 0.17 of one-draw birds against 0.56, and a step 1.06x as long: `stable` keeps it off.
    - ``g_part_attention``: attention over the caption's part slots inside Stage-I G (AttnGAN's word attention, Xu et
      al. 2018, with the ``part-ngrams`` encoder's slots as the words), for an embedding that has them (``build``'s
      ``text_parts``: :attr:`hwlib.data.cub.BirdSplit.text_parts`); without slots (CUB's char-CNN-RNN, the
      bag-of-ngrams encoder) there is nothing to attend to and the field changes nothing. The embedding's last
      ``parts * part_dim`` dimensions are one vector per bird part (:class:`hwlib.text.NgramEncoder` with ``parts``),
      each trained to name its part's colour. At every up-block each pixel takes a softmax over the parts from a 1x1
      conv of the block's features (which part am I?) and reads a scale and shift from its mix of the slots, through
      one linear map shared by the parts (a colour means the same paint on any part). ``g_slots`` mixes K projections
      of the whole caption's CA sample, so every region still reads every part's colour; here a pixel of the belly can
      read the belly's colour alone, the composition a white bird with a purple belly needs. Both maps start at zero:
      the generator starts as it would without them. Measured on `stable` with ``part-ngrams``, five seeds against the
      same five without it (``rerank_pattn_judge`` against ``rerank_pn_judge``; best of 16 by the part classifier at CA
      noise x2): body 0.77, wing 0.81, crown 0.57, belly 0.80, FID 77 against 0.73, 0.75, 0.53, 0.755, FID 86 (one draw:
      0.70, 0.77, 0.49, 0.75 against 0.62, 0.68, 0.44, 0.67) -- but notebook 01's demo 0.51 +- 0.16 (0.75, 0.31, 0.62,
      0.38, 0.50) against 0.525 +- 0.03, over 128 birds 0.53 +- 0.10 against 0.51 +- 0.03: the white bird with a purple
      belly is drawn by some seeds and not by others. A caption's birds vary less (pixel spread 0.17 against 0.28; real
      birds of one species 0.29), and 7,168 steps take 757 s against 624 s (1.21x, 1 thread beside another job), which
      notebook 01's 15-minute budget has no room for: `stable` keeps it off.
    - ``contrastive``: weight of an image-caption contrastive loss (the sentence-image term of XMC-GAN, Zhang et al.
      2021), added to both players' losses (0: off). D gains a ``match`` head embedding its 4x4 features and the
      condition ``mu`` into one space; D learns to pick each *real* image's caption among the batch's captions
      (cross-entropy over cosine similarities / 0.1), and G is trained so that D picks the right caption for its
      fakes. The matching-aware logit only says "right or wrong caption"; this says "which caption", B-1
      negatives a step instead of one.
    - ``contrastive_fakes``: D's contrastive head also learns, caption to image, to pick each caption's real image
      among the batch's real images *and G's images*. Trained on real images alone, the head never learns that G's
      images are not birds of the caption, and G satisfies it with features the attribute classifier does not see
      (``benchmarks/bench_stackgan_critic.py``: the head ranks the caption of G's birds above one with another
      crown colour 0.83 of the time, the attribute classifier 0.57, with 0.5 chance); with G's images as negatives it must read what real birds of the caption show.
      Measured on `stable` at `quick`'s 7,168 steps over three seeds: the head is fooled a little less (G's crowns
      pass it 0.78 of the time, against 0.83), but body 0.43, wing 0.41, crown 0.24, belly 0.29 against 0.47, 0.43,
      0.23, 0.28: `stable` keeps it off.
    - ``contrastive_g``: the contrastive term's weight in G's loss (None: ``contrastive``, as in D's). 0 keeps D's
      contrastive head -- D still learns which caption each real bird has -- but takes away the term G satisfies
      with features the attribute classifier does not see (``benchmarks/bench_stackgan_critic.py``). Measured on
      `stable` at 7,168 steps over three seeds: body 0.40, wing 0.44, crown 0.24, belly 0.26 against 0.47, 0.43, 0.23,
      0.28, and D's contrastive head still reads G's crowns at 0.81 (the classifier 0.53): G writes the caption into
      D's features through the matching-aware logit as well.
    - ``matcher``: weight of a frozen image-caption matcher's contrastive loss in G's (DAMSM's sentence term,
      AttnGAN, Xu et al. 2018; :mod:`hwlib.models.matching`): trained once on real birds, their captions and near
      misses, it scores G's images against the batch's captions and each image's near miss (0: off). Unlike D's
      heads, it cannot learn to read what G writes: D's contrastive head ranks the caption of G's birds above one with
      another crown colour 0.83 of the time, the attribute classifier 0.57 (``benchmarks/bench_stackgan_critic.py``).
      Measured on `stable` at 7,168 steps over three seeds: body 0.46, wing 0.44, crown 0.25, belly 0.29 against
      0.47, 0.43, 0.23, 0.28, and G fools the frozen matcher too (0.84 on G's crowns, 0.74 on real ones).
    - ``caption_mix``: how many of a sample's captions are averaged into its training condition (1: one caption, as
      StackGAN-Pytorch; the original TensorFlow StackGAN averages 4, ``TRAIN.NUM_EMBEDDING``). A caption names the
      crown or the belly only half the time; an average of 4 names it almost always. Sampling still takes one caption.
      Measured on `stable` at 7,168 steps over three seeds (4 captions): body 0.45, wing 0.45, crown 0.23, belly 0.26
      against 0.47, 0.43, 0.23, 0.28: `stable` keeps one caption.
    - ``parts``: weight of a per-part colour head in D (an auxiliary classifier, as TAC-GAN, Dash et al. 2017): from its
      4x4 features D names the colour of a real bird's body, wings, crown and belly, learnt from the colours its ten
      captions name (:meth:`hwlib.data.cub.BirdSplit.caption_labels`), and G is trained so that D names, for its
      image, the colours its caption asks for (0: off). The caption embedding says which colours to check; these
      labels teach D's features to see each part, which its matching-aware logit reads weakly on real birds (crown
      0.63, body 0.83, where the attribute classifier reads 0.90 and 0.98). Measured at `quick`'s 7,168 steps over
      three seeds, against the recipe without it (body 0.47, wing 0.43, crown 0.23, belly 0.28, FID 116): weight 1,
      0.44, 0.46, 0.27, 0.30, FID 112; weight 4, 0.50 (0.47-0.54), 0.52 (0.50-0.53), 0.29 (0.27-0.32), 0.48
      (0.44-0.51), FID 103 -- `stable` takes weight 4; weight 8, 0.51, 0.46, 0.30, 0.49, FID 155 (less bird-like). It
      costs diversity that came from the CA noise: the pixel spread among 8 noise vectors of a caption is 0.061 against
      0.084 without the head (with the CA mean, 0.041 and 0.039; ``benchmarks/bench_stackgan_sampling.py``). On the *training* species it draws more still (weight 4: 0.54,
      0.62, 0.33, 0.60): the generator learns the parts of the species it sees better than it composes them anew.
    - ``parts_fakes``: the part head has an eleventh class, "drawn by G", that D learns for every part of G's images
      (the (K+1)-class discriminator of semi-supervised GANs, Salimans et al. 2016, per part): G can no longer pass
      the head with features it alone writes, as it passes D's contrastive head (``contrastive_fakes``), but must
      draw parts D takes for real ones of the asked colour. Measured on `stable` at 7,168 steps over three seeds
      (weight 1): body 0.42, wing 0.41, crown 0.23, belly 0.31, FID 119 against 0.47, 0.43, 0.23, 0.28, 116 -- belly up,
      body down, as with the near-miss wrong pairs: `stable` keeps it off.
    - ``novel``: weight of a second, half-size batch per step whose captions name colour combinations of no training
      bird (:func:`hwlib.data.synthbirds.novel_captions`, every test species' combination left out): D learns G's
      images of them as fakes, and G is trained to pass D's matching-aware logit and its part head (``parts``) on them.
      With ``parts`` the generator draws the parts of *training* species far better than of unseen ones (body 0.53
      against 0.44, belly 0.43 against 0.30): it learns species, not parts. Captions of new combinations ask it to
      compose the parts (needs ``parts`` > 0 and a sentence encoder). Measured at 7,168 steps (weight 1 with ``parts``
      4, two seeds, 1.6x the time per step): body 0.50, wing 0.48, crown 0.25, belly 0.36, FID 90 against 0.50, 0.52,
      0.29, 0.48, FID 103 -- more bird-like, not truer to the caption. With the n-gram encoder, three seeds, the best
      of 16 by the part classifier at CA noise x2 (``benchmarks/bench_stackgan_sampling.py``, ``rerank_novel_judge``):
      body 0.77, wing 0.78, crown 0.56, belly 0.74, FID 69 against `stable`'s 0.79, 0.81, 0.61, 0.76, FID 69; notebook
      01's demo 0.35 (0.50, 0.06, 0.50 by seed) against 0.19, and 2.7x the variety within a caption (pixel spread 0.26
      against 0.10; real birds of one species 0.29). The demo gain is within the seed spread.
      Weight 2 (``rerank_novel2_judge``, five seeds): demo 0.44 +- 0.06 (0.38, 0.50, 0.50, 0.38, 0.44), body 0.75,
      wing 0.75, crown 0.50, belly 0.73, FID 72 -- the demo of weight 3 within the seed spread, every colour a
      little higher. Weight 3 (``rerank_novel3_judge``): five seeds, demo 0.46 +- 0.09 (0.56, 0.50, 0.50, 0.31,
      0.44), body 0.72, wing 0.70, crown 0.47, belly 0.71, FID 73 (55-113). `stable` took weight 3 on its first
      three seeds (0.52); over five, weight 2 is as good on the demo and better on colour, and `stable` has taken
      it since. Both are short of 0.5 on average, with every colour goal met. Weight 3, one draw per caption:
      body 0.67, wing 0.68, crown 0.45, belly 0.70, FID 71, pixel spread 0.23 against 0.73, 0.74, 0.58, 0.75, FID
      84, spread 0.066 without, and the gap between seen and unseen species' colours falls from 0.10 to 0.04: it
      composes parts more, recalls species less. Weight 4 (two seeds, ``rerank_novel4_judge``): demo 0.38 at both, body 0.76,
      wing 0.74, crown 0.50, belly 0.67, FID 68 -- truer colours, no better demo.
    - ``novel_focus``: the fraction of the novel half-batch drawn in proportion to each caption's latest part loss on
      G's image of it (:class:`NovelFocus`, prioritised replay), the rest uniformly (0: all uniformly). The demo's
      white bird with a purple belly is never drawn white: G fails some combinations far more than others, and a
      uniform draw shows it each of the 4,000 captions about 14 times in 7,168 steps. Measured at 0.5 on `stable`,
      three seeds (``rerank_focus_judge``, ``pairs_novel_focus``): demo 0.42 (0.31, 0.38, 0.56) against 0.46 at the
      same seeds, colours 0.77 / 0.75 / 0.50 / 0.73, FID 76 -- no gain; `stable` keeps it off.
    - ``novel_pairs``: the novel captions each name two parts in colours no training species pairs (e.g. a white body
      with a purple belly; ``synthbirds.novel_set(unseen_pairs=True)``, which the callers build from this field);
      uniformly drawn combinations do so in about one caption in ten. Notebook 01's generator draws the asked body
      colour less often beside a belly colour no training species pairs with it (section 10a). Measured on `stable`,
      three seeds (``rerank_pairs_judge``, ``pairs_novel_pairs``): the body drawn as asked beside unseen pairs 0.50
      and beside seen ones 0.47 (`stable`: 0.51 and 0.66) -- the gap closed by drawing every body less often (no
      belly named 0.52 against 0.72) --, demo 0.46 (0.62, 0.25, 0.50) as `stable`'s at the same seeds, FID 102
      against 72; `stable` keeps it off.
    - ``part_teacher``: weight of a frozen part reader's colour loss in G's (0: off): a
      :class:`hwlib.models.attributes.PartReader`, trained once on the real training birds and the part colours their
      captions name (``attributes.train_part_judge(arch="local")``), reads the body, wings and belly of G's images of
      the batch's captions and of the novel ones (``novel``), and G is trained to draw the colours asked. D's part head
      reads a part from D's whole 4x4 map, and on real unseen species it reads body / wing / belly at about 0.6 / 0.7 /
      0.6: it learnt the training species' combinations, so it cannot teach G a white body beside a purple belly.
      The reader takes each colour from the cells its attention picks (0.88 / 0.93 / 0.85 on the same birds at width 8);
      its crown reading is at chance (the crown is a few pixels), so the crown is left out of this loss. Measured at
      weight 2 on `stable`, three seeds (``rerank_teacher2_judge``): one draw body 0.79, wing 0.79, crown 0.45, belly
      0.75, FID 62 against 0.70, 0.74, 0.46, 0.73, FID 66 at the same seeds; best of 16 at CA noise x2 0.815, 0.795,
      0.52, 0.77, FID 66 against 0.74, 0.75, 0.52, 0.75, FID 72 -- but the demo over 128 birds 0.385 (0.52, 0.45,
      0.20) against 0.49 (0.46, 0.55, 0.47), and a step takes 1.2x as long: `stable` keeps it off.
    - ``mode_seeking``: weight of the mode-seeking term (MSGAN, Mao et al. 2019) in G's loss: G draws the first half of
      its batch's captions a second time with fresh noise and is rewarded for the distance between the two images per
      unit distance between the noises, ``w / (mean|G(t, z1) - G(t, z2)| / mean|z1 - z2| + 1e-5)`` (0: off). With
      `stable` the eight noise vectors of one caption give nearly the same bird (pixel spread 0.06 against 0.29 among
      real birds of one species): conditional GANs learn to ignore z. Measured on `stable` at 7,168 steps over three
      seeds (weight 1, 1.2x the time per step): the spread rises to 0.29 (0.29-0.30), that of real birds, mostly in
      pose and background, but body 0.43, wing 0.54, crown 0.26, belly 0.41, FID 155 against 0.50, 0.52, 0.29, 0.48,
      FID 103. Weight 0.1: spread 0.14 (0.11-0.16), body 0.47 (0.38-0.53), wing 0.57, crown 0.28, belly 0.44, FID 99 --
      2.3x the variety at about the same colours (body and belly a little lower, wing higher); not yet in `stable`.
    - ``stage2_skip``: Stage-II paints a residual over its input, ``tanh(atanh(up(x64)) + r)`` with ``up`` bicubic
      (residual learning, as VDSR, Kim et al. 2016), so it starts near Stage-I's colours instead of a flat grey and
      learns the detail on top. The last conv keeps the official N(0, 0.02) initialisation: started at zero, the
      residual stayed smooth and added no detail in 720 steps (a one-seed probe: high-frequency energy 0.0016,
      that of bicubic up-sampling).
    - ``stage2_keep_low``: Stage-II's output is corrected so that, pooled to 64 px, it is the Stage-I image it refines
      (:func:`keep_low`, a consistency-enforcing output as in explorable super-resolution, Bahat & Michaeli 2020):
      Stage-II keeps every colour Stage-I drew, by construction rather than by a loss, and adds only detail within each
      4x4 block -- it can no longer correct a colour Stage-I got wrong. Trained this way (``benchmarks/bench_stackgan_stage2.py``,
      three Stage-II seeds, with an earlier ``keep_low`` that corrected in one bicubic pass and block shifts) G2 learns stripes: its gradient keeps only what the projection lets through, high
      frequencies, and high-frequency energy reached 0.0044, 0.0068 and 0.065 (real birds 0.0144, the stable recipe
      0.0018-0.0024), the last with visible horizontal stripes. So `stable` trains without it and projects at sampling
      instead (:func:`generate`'s ``keep_low``), where the consistency term has already kept the correction small.
    - ``stage2_consistency``: weight of an L1 term in Stage-II's generator loss between its output average-pooled
      to 64 px and the Stage-I image it refines: Stage-II keeps the colours Stage-I drew for the caption and adds
      detail above them. On notebook 01's quick Stage-I, over three Stage-II seeds
      (``benchmarks/bench_stackgan_stage2.py``), the body colour is 0.51 with it, 0.45 without it and 0.26 without
      the skip either (Stage-I: 0.52).
    - ``stage2_diffaug``: Stage-II's DiffAugment policy (None: ``diffaug``, as Stage I). On notebook 01's quick Stage-I
      (n-gram encoder, sampled with ``keep_low``, ``benchmarks/bench_stackgan_stage2.py``, three Stage-II seeds) Stage-II
      with translation and cutout adds almost no high frequencies (0.0017, 0.0019, 0.0014 against 0.0015 for Stage I
      up-sampled); without them (``""``) 2-4 times as much, but what it adds is mostly a fine regular, grid-like
      texture, not the edges of real birds (notebook 01, section 8a), so `stable` keeps them.
    - ``stage2_sr``: weight of a paired super-resolution term in Stage-II's generator loss (the content loss of SRGAN,
      Ledig et al. 2017): Stage-II is also given each real bird of the batch average-pooled to 64 px, with its
      caption, and pays the L1 distance between its output and the real bird (one more Stage-II forward and backward
      per step, 1.6x the time). ``stage2_image_skip``: the bicubic up-sampled input joins Stage-II's last features at
      full resolution, through two 3x3 convs, so that edges can be sharpened where they are (the paper's Stage-II sees
      its input only through a 16x16 bottleneck). Measured on notebook 01's quick Stage-I, seed 0, sampled with
      ``keep_low`` (``benchmarks/bench_stackgan_stage2.py``): detail on real test birds (``real_detail``, the error of
      the high band against the real bird; bicubic 0.876) 0.910 for `stable`, 0.911 with ``stage2_sr = 1``, 0.899 with
      10, 0.896 with ``stage2_image_skip`` and 10, and high-frequency energy 0.0017, 0.0017, 0.0015, 0.0014 (bicubic
      0.0015): at quick's widths and 720 steps neither teaches Stage-II the birds' edges (`stable` takes ``stage2_sr``
      only with the branch below); nor
      do more steps of that Stage-II (1,440 and 2,880, the learning rate halved as often: 0.901 both times), a G twice as
      wide (``gf2 = 32``: 0.907; with ``stage2_sr = 10`` and the image skip 0.896) or ``stage2_sr = 100`` (0.896).
    - ``stage2_sr_branch``: width of a super-resolution branch at the input's resolution (:func:`espcn`, Shi et al.
      2016: a 5x5 and three 3x3 convs on the 64-px image, then a sub-pixel shuffle to S), whose output joins the
      residual of ``stage2_skip`` (which it needs); 0: none, the paper's Stage-II. Its last conv starts at zero, so
      Stage-II starts where it does without it. ``stage2_sr_lr``: the branch's learning rate, times G's (halved with
      G's). ``stage2_sr_paired``: the branch learns from the paired term alone (its output is detached where Stage-II
      refines Stage-I's fakes): a super-resolution net trained beside the GAN rather than by it, as SRGAN starts from
      an SRResNet trained on the paired loss. Why: the paper's Stage-II sees its input only through a 16x16
      bottleneck, and the image skip's 3x3 convs at 256 px see little more than one input pixel. Measured on the
      detail of real test birds (bicubic 0.876; ``benchmarks/bench_stackgan_sr.py``, ``bench_stackgan_stage2.py
      --keep-low``, seed 0): the branch (width 32) trained *alone* on Stage-II's 320 birds, batch and 720 steps
      reaches 0.697 at a constant 1e-3 (at 2e-3 it never leaves zero); inside Stage-II with ``stage2_sr = 10`` it
      learns nothing when every term of G trains it (0.902; 0.900 at ``stage2_sr_lr = 5``) -- the GAN terms drown
      the paired one -- but 0.810 without the GAN terms (``stage2_adversarial = 0``), 0.813 with ``stage2_sr = 100``
      and 0.819 paired-only at ``stage2_sr_lr = 5`` (0.796 at 10). `stable` takes the paired-only branch at 5x:
      over three Stage-II seeds 0.803 (0.791-0.819), high-frequency energy 0.0020 against bicubic's 0.0015.
      ``stage2_sr_halving``: the branch's learning rate halves with G's (every ``lr_decay_epochs2``); False keeps it
      constant, as the branch trained alone (0.697 at a constant 1e-3) while the rest of Stage-II halves. Measured at
      quick's 12 epochs (lr halved after 8), three Stage-II seeds: 0.830 (0.823-0.841) against 0.838 (0.832-0.850)
      with it halving, the same seeds 0.009, 0.009 and 0.007 apart; `stable` keeps it halving.
    - ``stage2_adversarial``: weight of Stage-II G's terms that D judges (its logits, contrastive and part heads); 0
      trains Stage-II as a plain super-resolution network on the paired and consistency terms alone, a check of what
      the architecture can learn without the GAN (D still trains, unused).
    """
    loss: str = "bce"
    wrong: str = "shift"
    diffaug: str = ""
    ema: float | None = None
    spectral_norm: bool = False
    projection: bool | str = False
    lr_d: float = 1.0
    ca_logvar_init: float = 0.0
    g_min_channels: int = 0
    g_cond_norm: bool = False
    g_slots: int = 0
    g_part_attention: bool = False
    contrastive: float = 0.0
    contrastive_fakes: bool = False
    contrastive_g: float | None = None
    matcher: float = 0.0
    caption_mix: int = 1
    parts: float = 0.0
    parts_fakes: bool = False
    novel: float = 0.0
    novel_focus: float = 0.0
    novel_pairs: bool = False
    part_teacher: float = 0.0
    mode_seeking: float = 0.0
    stage2_skip: bool = False
    stage2_keep_low: bool = False
    stage2_consistency: float = 0.0
    stage2_diffaug: str | None = None
    stage2_sr: float = 0.0
    stage2_image_skip: bool = False
    stage2_adversarial: float = 1.0
    stage2_sr_branch: int = 0
    stage2_sr_lr: float = 1.0
    stage2_sr_paired: bool = False
    stage2_sr_halving: bool = True

    def __post_init__(self) -> None:
        for name, value, allowed in (("loss", self.loss, ("bce", "hinge")), ("wrong", self.wrong, ("shift", "class", "hardest", "swap", "none")),
                                     ("projection", self.projection, (False, True, "map"))):
            if value not in allowed:
                raise ValueError(f"Recipe.{name} must be one of {allowed}, not {value!r}")
        if self.stage2_sr_branch and not self.stage2_skip:
            raise ValueError("Recipe.stage2_sr_branch adds to the residual of stage2_skip: set stage2_skip=True as well")

    # fields added after runs were checkpointed, with the value that reproduces those runs: left out of the
    # dicts (a run's identity) while they hold it, so the checkpoints stay valid
    _LATER = {"matcher": 0.0, "contrastive_fakes": False, "caption_mix": 1, "contrastive_g": None, "parts": 0.0,
              "parts_fakes": False, "novel": 0.0, "novel_focus": 0.0, "novel_pairs": False, "part_teacher": 0.0, "g_slots": 0, "mode_seeking": 0.0,
              "g_part_attention": False,
              "stage2_keep_low": False, "stage2_diffaug": None, "stage2_sr": 0.0,
              "stage2_image_skip": False, "stage2_adversarial": 1.0, "stage2_sr_branch": 0,
              "stage2_sr_lr": 1.0, "stage2_sr_paired": False, "stage2_sr_halving": True}

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not (k in self._LATER and v == self._LATER[k])}

    def stage1_dict(self) -> dict[str, Any]:
        """The fields Stage I trains with (all but ``stage2_*``): a Stage-I run's identity, which a Stage-II-only
        change leaves alone."""
        return {k: v for k, v in self.as_dict().items() if not k.startswith("stage2_")}


RECIPES = {
    "paper": Recipe(),
    # chosen by benchmarks/bench_stackgan_consistency.py at quick's budget (results/stackgan_ladder/): the caption
    # reaches G at every resolution (conditional norm) and D through a projection, CA noise starts quiet, and
    # DiffAugment keeps D from memorising 1,800 birds, and G is sampled from a short EMA of its weights (0.99).
    # Hinge loss and spectral norm stay options: at this budget they drew less bird-like images (attribute-feature
    # FID ~500 against ~200), as did a slow EMA (0.999, whose averaged weights no longer match the copied BN statistics).
    # The contrastive term and Stage-II's skip came after: over three training seeds each on an AMD EPYC, the
    # contrastive term (weight 1) raised unseen species' body colour (benchmarks/results/stackgan_ladder/,
    # benchmarks/RESULTS.md).
    # The part head came last: three training seeds at 7,168 steps, unseen species, body / wing / crown / belly
    # 0.50 / 0.52 / 0.29 / 0.48 with it (weight 4), 0.47 / 0.43 / 0.23 / 0.28 without (all with MiniLM's embeddings).
    # Stage-II's super-resolution branch came next (bench_stackgan_stage2.py and bench_stackgan_sr.py): the first
    # Stage-II of this recipe to draw real birds' detail better than bicubic up-sampling. The novel captions came
    # last (weight 2, n-gram encoder, five seeds, best of 16 by the part classifier at CA noise x2): notebook 01's
    # demo 0.44 (0.38-0.50) against 0.19 without, colours 0.75 / 0.75 / 0.50 / 0.73 against 0.79 / 0.81 / 0.61 /
    # 0.76 -- every quick goal still met (results/stackgan_sampling/rerank_novel2_judge.json; weight 3, stable's
    # first choice, drew every colour less often for the same demo within the seed spread)
    "stable": Recipe(diffaug="translation,cutout", ema=0.99, ca_logvar_init=-4.0, g_cond_norm=True, projection=True,
                     contrastive=1.0, parts=4.0, novel=2.0, stage2_skip=True, stage2_consistency=10.0, stage2_sr=10.0,
                     stage2_sr_branch=32, stage2_sr_lr=5.0, stage2_sr_paired=True),
}


def get_recipe(recipe: str | Recipe | dict) -> Recipe:
    """A :class:`Recipe` from its name in :data:`RECIPES`, a dict of fields, or a Recipe."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return Recipe(**recipe)
    if recipe not in RECIPES:
        raise ValueError(f"unknown StackGAN recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[recipe]


class CondAugment(nn.Module):
    """Conditioning augmentation: a linear map of the text embedding to (mu, logvar) and one Gaussian sample.

    The embedding is first standardised per dimension with buffers ``t_mean`` / ``t_std`` (identity until
    :meth:`fit_text_stats` sets them from the training embeddings). Sentence embeddings such as MiniLM's are
    unit vectors dominated by one shared direction (per-dimension spread ~0.03), so without this the caption-
    specific part of ``mu`` is tiny and the KL term erases it before the generator learns to use it.
    """

    def __init__(self, t_dim: int = 1024, c_dim: int = 128, logvar_init: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(t_dim, 2 * c_dim)
        self.c_dim, self.logvar_init = c_dim, logvar_init
        self.noise = 1.0  # scale of sigma * eps (generate's ca_noise; 1 in training)
        self.register_buffer("t_mean", torch.zeros(t_dim))
        self.register_buffer("t_std", torch.ones(t_dim))

    @torch.no_grad()
    def init_logvar(self) -> None:
        """Set the log-variance bias to ``logvar_init`` (the generators call it after :func:`weights_init`)."""
        self.fc.bias[self.c_dim:].fill_(self.logvar_init)

    @torch.no_grad()
    def fit_text_stats(self, embeddings: torch.Tensor) -> None:
        """Set the standardisation from training embeddings (N, t_dim) (or (N, 10, t_dim))."""
        e = embeddings.reshape(-1, embeddings.shape[-1]).float()
        self.t_mean.copy_(e.mean(0))
        self.t_std.copy_(e.std(0).clamp_min(1e-6))

    def forward(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.fc((text - self.t_mean) / self.t_std).chunk(2, dim=1)
        c = mu + torch.randn_like(mu) * (0.5 * logvar).exp() * self.noise if self.noise else mu
        return c, mu, logvar


def with_condition(h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Features (B, C, H, W) and a condition (B, D) -> (B, C + D, H, W), the condition repeated at every pixel, in h's
    memory format: ``torch.cat`` of a channels-last h and the expanded condition would be contiguous, and the
    convolution after it would take it so (StackGAN-II's joint layer forward and backward 5.4 against 4.7 ms at batch 8,
    2 threads). The same values."""
    if not is_channels_last(h):
        return torch.cat([h, cond[:, :, None, None].expand(-1, -1, *h.shape[2:])], 1)
    rows = cond[:, None, None, :].expand(-1, *h.shape[2:], -1)
    return torch.cat([h.permute(0, 2, 3, 1), rows], 3).permute(0, 3, 1, 2)


def icnr_(weight: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """ICNR init of a conv weight (C_out * scale**2, C_in, k, k) feeding ``PixelShuffle(scale)``.

    PixelShuffle sends channel ``c * scale**2 + k`` to sub-pixel ``k`` of channel ``c``; giving those
    ``scale**2`` channels the same kernel makes the block start as conv + nearest up-sampling.
    """
    out = weight.shape[0] // scale**2
    sub = torch.empty(out, *weight.shape[1:])
    nn.init.kaiming_normal_(sub)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(scale**2, dim=0))
    return weight


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and state-dict keys) that trains a float32 channels-last CPU input
    (bf16 too with ``HWLIB_BF16_NORM=1``) with hwlib's batch-norm kernel
    (:func:`hwlib.models.batch_norm_act.batch_norm_act`): PyTorch's CPU batch norm for that layout is 2-14x slower,
    worst for StackGAN's 8-channel layers at 64-256 px. The same normalisation and running statistics up to float
    rounding (in bf16 autocast, up to bf16 rounding). Only in training where gradients are taken
    (:func:`hwlib.models.batch_norm_act.available`); evaluation, passes without gradients (sampling,
    :func:`standing_stats`) and other layouts go through ``nn.BatchNorm2d`` unchanged, bitwise as before. ``act``:
    the slope of the :class:`ReLU` (0) or :class:`LeakyReLU` that follows it (:func:`norm_act`), which the kernel
    then applies in the same pass, marking its output so that the activation module passes it on.
    ``forward(x, film=(gamma, beta))``, each (B, C): the conditional norm ``bn(x) * (1 + gamma) + beta`` before that
    activation (Stage-I's ``Recipe.g_cond_norm``), in the kernel's pass where it trains, else as two operations."""

    def __init__(self, num_features: int, *args: Any, act: float | None = None, **kwargs: Any) -> None:
        super().__init__(num_features, *args, **kwargs)
        self.act = act

    def forward(self, x: torch.Tensor, film: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if not (self.training and self.affine and batch_norm_act.available(x)):
            out = super().forward(x)
            if film is not None:
                gamma, beta = (t[:, :, None, None] for t in film)
                out = out * (1 + gamma) + beta
            return out
        self._check_input_dim(x)
        factor = self.momentum or 0.0
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # the cumulative average, as nn.BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
        stats = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        out = batch_norm_act.batch_norm_act(x, self.weight, self.bias, *stats, factor, self.eps,
                                            1.0 if self.act is None else self.act,
                                            None if film is None else (1 + film[0], film[1]))
        if self.act is not None:
            out._hwlib_activated = True  # read by the ReLU / LeakyReLU that follows
        return out


def _activated(x: torch.Tensor) -> bool:
    """Whether :class:`BatchNorm2d`'s kernel already applied the activation to x; the mark is read once."""
    if getattr(x, "_hwlib_activated", False):
        x._hwlib_activated = False
        return True
    return False


class _AfterNorm:
    """An activation module that passes on an input its :class:`BatchNorm2d` has already activated (in its kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if _activated(x) else super().forward(x)


class ReLU(_AfterNorm, nn.ReLU):
    """``nn.ReLU`` after a :class:`BatchNorm2d` (:func:`norm_act`)."""


class LeakyReLU(_AfterNorm, nn.LeakyReLU):
    """``nn.LeakyReLU`` after a :class:`BatchNorm2d` (:func:`norm_act`)."""


def norm_act(c: int, slope: float = 0.0, fused: bool = True) -> list[nn.Module]:
    """Batch norm of ``c`` channels then ReLU (``slope`` 0) or LeakyReLU(``slope``, in place), as two modules for a
    Sequential (the keys and printout of ``nn.BatchNorm2d`` and ``nn.ReLU`` / ``nn.LeakyReLU``). ``fused``: where
    the kernel trains the batch norm it applies the activation too, and the activation module passes its output on;
    ``fused=False`` where something comes between the two (Stage-I's per-pixel conditional norm: ``g_slots``,
    ``g_part_attention``; a per-channel one goes into the kernel's pass, ``BatchNorm2d(x, film=...)``)."""
    act = ReLU(True) if slope == 0 else LeakyReLU(slope, True)
    return [BatchNorm2d(c, act=slope if fused else None), act]


class UpBlock(nn.Sequential):
    """An :func:`up_block`'s layers (or a leading slice of them), run in order as ``nn.Sequential`` runs them, except
    that a nearest ×2 followed by its 3×3 conv is computed as one transposed convolution where
    :func:`hwlib.models.upsample_conv.available` (float32 on a CPU): the same function, 1.5-2.2x faster for StackGAN's
    blocks there. It prints as the ``nn.Sequential`` it computes, so architecture printouts read as before."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        if len(layers) > 1 and isinstance(layers[0], nn.Upsample) and upsample_conv.available(x):
            x, layers = upsample_conv.upsample_conv(x, layers[1].weight, layers[1].bias), layers[2:]
        for layer in layers:
            x = layer(x)
        return x

    def _get_name(self) -> str:
        return "Sequential"


def up_block(c_in: int, c_out: int, mode: str = "nearest", fused: bool = True) -> UpBlock:
    """(B, c_in, H, W) -> (B, c_out, 2H, 2W): nearest + conv3x3, or conv3x3 (ICNR) + PixelShuffle; then BN + ReLU
    (:func:`norm_act`; ``fused=False`` where something comes between the two: Stage-I's per-pixel conditional norm)."""
    if mode == "nearest":
        layers = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)]
    elif mode == "pixelshuffle":
        conv = nn.Conv2d(c_in, 4 * c_out, 3, 1, 1, bias=False)
        icnr_(conv.weight)
        layers = [conv, nn.PixelShuffle(2)]
    else:
        raise ValueError(f"upsample must be 'nearest' or 'pixelshuffle', not {mode!r}")
    return UpBlock(*layers, *norm_act(c_out, fused=fused))


class ResBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus identity, then ReLU; channels and size unchanged."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), *norm_act(c),
                                  nn.Conv2d(c, c, 3, 1, 1, bias=False), BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Stage1G(nn.Module):
    """Stage-I generator: (text (B, t_dim), z (B, z_dim)) -> (image (B, 3, 64, 64) in [-1, 1], mu, logvar)."""

    def __init__(self, t_dim: int = 1024, c_dim: int = 128, z_dim: int = 100, gf: int = 128,
                 upsample: str = "nearest", ca_logvar_init: float = 0.0, min_channels: int = 0,
                 cond_norm: bool = False, slots: int = 0, part_slots: int = 0, part_dim: int = 16) -> None:
        super().__init__()
        ngf = 8 * gf
        self.z_dim, self.ngf = z_dim, ngf
        self.ca = CondAugment(t_dim, c_dim, ca_logvar_init)
        self.fc = nn.Sequential(nn.Linear(z_dim + c_dim, ngf * 16, bias=False), nn.BatchNorm1d(ngf * 16), nn.ReLU(True))
        widths = [max(ngf // 2**i, min_channels) for i in range(5)]
        fused = not (slots or part_slots)  # a per-pixel conditional norm comes between BN and ReLU
        self.up = nn.Sequential(*(up_block(widths[i], widths[i + 1], upsample, fused) for i in range(4)))
        self.to_img = nn.Sequential(nn.Conv2d(widths[-1], 3, 3, 1, 1, bias=False), nn.Tanh())
        self.apply(weights_init)
        self.ca.init_logvar()
        self.film, self.where, self.slots = None, None, slots
        if slots and not cond_norm:
            raise ValueError("Recipe.g_slots mixes the conditional norm's scales and shifts: set g_cond_norm=True as well")
        if cond_norm:  # (1 + gamma(c), beta(c)) after each up-block's BN, zero at start
            self.film = nn.ModuleList(nn.Linear(c_dim, 2 * w * max(slots, 1)) for w in widths[1:])
            for lin in self.film:
                nn.init.zeros_(lin.weight), nn.init.zeros_(lin.bias)
        if slots:  # per pixel, a softmax over the slots from the block's features (Recipe.g_slots), even at start
            self.where = nn.ModuleList(nn.Conv2d(w, slots, 1) for w in widths[1:])
            for conv in self.where:
                nn.init.zeros_(conv.weight), nn.init.zeros_(conv.bias)
        self.part_slots, self.part_dim, self.part_film, self.part_where = part_slots, part_dim, None, None
        if part_slots:  # Recipe.g_part_attention: per pixel, attention over the caption's part slots, zero at start
            if part_slots * part_dim > t_dim:
                raise ValueError(f"Recipe.g_part_attention: {part_slots} part slots of {part_dim} dimensions do not fit "
                                 f"a {t_dim}-d embedding; pass the embedding's BirdSplit.text_parts")
            self.part_film = nn.ModuleList(nn.Linear(part_dim, 2 * w) for w in widths[1:])
            self.part_where = nn.ModuleList(nn.Conv2d(w, part_slots, 1) for w in widths[1:])
            for m in (*self.part_film, *self.part_where):
                nn.init.zeros_(m.weight), nn.init.zeros_(m.bias)

    def part_vectors(self, text: torch.Tensor) -> torch.Tensor:
        """(B, t_dim) -> (B, part_slots, part_dim): the embedding's part slots, standardised as CA standardises them."""
        tail = slice(-self.part_slots * self.part_dim, None)
        parts = (text[:, tail] - self.ca.t_mean[tail]) / self.ca.t_std[tail]
        return parts.view(len(text), self.part_slots, self.part_dim)

    def forward(self, text: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c, mu, logvar = self.ca(text)
        h = self.fc(torch.cat([z, c], 1)).view(-1, self.ngf, 4, 4)
        if self.film is None and self.part_film is None:
            return self.to_img(self.up(h)), mu, logvar
        parts = self.part_vectors(text) if self.part_film is not None else None
        for i, block in enumerate(self.up):
            if parts is None and self.where is None:  # one (gamma, beta) per channel: in the batch norm's pass
                film = self.film[i](c).to(h.dtype).chunk(2, dim=1)  # (B, w) each
                h = block[-1](block[-2](block[:-2](h), film=film))  # block: up-sampling, conv, BN, ReLU
                continue
            h = block[:-1](h)  # block[-1] is the ReLU
            gamma = beta = 0.0
            if self.film is not None and self.where is None:
                gamma, beta = self.film[i](c).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
            elif self.film is not None:  # (B, K, 2w) pairs mixed per pixel by (B, K, H, W) weights -> (B, 2w, H, W)
                mix = self.where[i](h).softmax(1)
                gamma, beta = torch.einsum("bkc,bkhw->bchw", self.film[i](c).to(h.dtype).view(len(h), self.slots, -1),
                                           mix).chunk(2, dim=1)
            if parts is not None:  # each pixel's softmax over the parts reads its mix of their slots' paint
                mix = self.part_where[i](h).softmax(1)  # (B, parts, H, W)
                g, b = torch.einsum("bkc,bkhw->bchw", self.part_film[i](parts).to(h.dtype), mix).chunk(2, dim=1)
                gamma, beta = gamma + g, beta + b
            h = block[-1](h * (1 + gamma) + beta)
        return self.to_img(h), mu, logvar


class Stage2G(nn.Module):
    """Stage-II generator: (Stage-I image (B, 3, 64, 64), text (B, t_dim)) -> (image (B, 3, S, S), mu, logvar).

    ``S = 16 * 2**n_up`` (256 for the paper's 4 up-blocks). It has its own conditioning augmentation.
    """

    def __init__(self, t_dim: int = 1024, c_dim: int = 128, gf: int = 128, n_res: int = 4, n_up: int = 4,
                 upsample: str = "nearest", ca_logvar_init: float = 0.0, skip: bool = False,
                 keep_low: bool = False, image_skip: bool = False, sr_branch: int = 0, sr_paired: bool = False) -> None:
        super().__init__()
        self.skip, self.keep_low = skip, keep_low
        self.ca = CondAugment(t_dim, c_dim, ca_logvar_init)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, gf, 3, 1, 1, bias=False), nn.ReLU(True),
            nn.Conv2d(gf, 2 * gf, 4, 2, 1, bias=False), *norm_act(2 * gf),
            nn.Conv2d(2 * gf, 4 * gf, 4, 2, 1, bias=False), *norm_act(4 * gf))
        self.joint = nn.Sequential(nn.Conv2d(4 * gf + c_dim, 4 * gf, 3, 1, 1, bias=False), *norm_act(4 * gf))
        self.res = nn.Sequential(*(ResBlock(4 * gf) for _ in range(n_res)))
        widths = [max(4 * gf // 2**i, 8) for i in range(n_up + 1)]
        self.up = nn.Sequential(*(up_block(widths[i], widths[i + 1], upsample) for i in range(n_up)))
        self.to_img = nn.Sequential(nn.Conv2d(widths[-1], 3, 3, 1, 1, bias=False), nn.Tanh())
        # Recipe.stage2_image_skip: the up-sampled input image joins the last features at full resolution
        self.refine = nn.Sequential(nn.Conv2d(widths[-1] + 3, widths[-1], 3, 1, 1, bias=False), nn.ReLU(True),
                                    nn.Conv2d(widths[-1], widths[-1], 3, 1, 1, bias=False), nn.ReLU(True)) if image_skip else None
        self.apply(weights_init)
        self.ca.init_logvar()
        # Recipe.stage2_sr_branch: an ESPCN at the input's 64 px (its own initialisation: Stage-II starts as without it)
        self.sr_branch = espcn(sr_branch, 2**n_up // 4) if sr_branch else None
        self.sr_paired = sr_paired
        if skip:  # no tanh: the last conv paints a residual in atanh space over the up-sampled Stage-I image
            self.to_img = self.to_img[0]

    def forward(self, image: torch.Tensor, text: torch.Tensor,
                paired: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``paired``: ``image`` is a real bird's 64-px average (the paired super-resolution term), where a
        ``sr_paired`` branch learns; elsewhere its output is detached."""
        c, mu, logvar = self.ca(text)
        h = self.encoder(image)
        h = self.joint(with_condition(h, c))
        h = self.up(self.res(h))
        if self.skip or self.refine is not None:  # the input up-sampled, for the residual and / or the image skip
            base = bicubic_up(image, h.shape[-1]).to(h.dtype)
        if self.refine is not None:
            h = self.refine(torch.cat([h, base], 1))
        out = self.to_img(h)
        if self.sr_branch is not None:
            detail = self.sr_branch(image.to(out.dtype))
            out = out + (detail.detach() if self.sr_paired and not paired else detail)
        if self.skip:
            out = torch.tanh(out + torch.atanh(base.clamp(-0.999, 0.999)))  # out first: in its memory format
        if self.keep_low:
            out = keep_low(out, image)
        return out, mu, logvar


def espcn(width: int, factor: int) -> nn.Sequential:
    """A sub-pixel super-resolution net (ESPCN, Shi et al. 2016): images (B, 3, s, s) -> (B, 3, factor*s,
    factor*s), a 5x5 and three 3x3 convs at the input's resolution then a pixel shuffle. PyTorch's initialisation but
    the last conv at zero, so it starts by adding nothing: the residual of Stage-II's ``stage2_sr_branch``."""
    net = nn.Sequential(nn.Conv2d(3, width, 5, 1, 2), nn.ReLU(True), nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(True),
                        nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(True), nn.Conv2d(width, 3 * factor**2, 3, 1, 1),
                        nn.PixelShuffle(factor))
    nn.init.zeros_(net[-2].weight)
    nn.init.zeros_(net[-2].bias)
    return net


@functools.lru_cache(maxsize=16)
def _bicubic_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """(n_out, n_in) float32: PyTorch's 1-D bicubic resampling (align_corners=False, border replicated) as a matrix,
    read off by resampling the identity with ``F.interpolate`` itself."""
    eye = torch.eye(n_in, device=device)[:, None, :, None]  # n_in unit signals (n_in, 1, n_in, 1)
    return F.interpolate(eye, size=(n_out, 1), mode="bicubic", align_corners=False)[:, 0, :, 0].T.contiguous()


def bicubic_up(x: torch.Tensor, size: int) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bicubic", align_corners=False)`` for square images (B, C, s, s) -> (B, C, size,
    size) float32, as two matrix products (the filter is separable and linear): the same values to float32 rounding
    (4e-7 on images in [-1, 1]), 6x faster on a 2-core CPU (1.5 ms against 9.3 ms for 8 images 64 -> 256 px), where
    PyTorch's bicubic kernel took 5 % of a Stage-II training step and most of :func:`keep_low`. Computed in float32
    outside autocast; differentiable."""
    m = _bicubic_matrix(x.shape[-1], size, x.device)
    with torch.autocast(x.device.type, enabled=False):
        return m @ x.float() @ m.T


def keep_low(high: torch.Tensor, low: torch.Tensor, iters: int = 12, bisect: int = 30) -> torch.Tensor:
    """``high`` (B, C, S, S) in [-1, 1] corrected so that its block means (area pooling to ``low``'s size s) are
    exactly ``low`` (B, C, s, s) in [-1, 1]: a consistency-enforcing output (Bahat & Michaeli, "Explorable Super
    Resolution", CVPR 2020), here for Stage-II over its Stage-I input. The mismatch of the pooled image is taken out
    bicubic-smooth, ``iters`` times (each pass leaves only what bicubic up-sampling does not pool back to; twelve leave
    under 1e-4 on notebook 01's images), so the correction draws no block edges where the image stays in range.
    Where it leaves [-1, 1] (about 1 % of the pixels of notebook 01's Stage-I images up-sampled, next to colours near
    white or black), each block is shifted by the one constant that restores its mean after clamping (``bisect``
    bisection steps, on the blocks where clamping binds alone: the projection onto the in-range images with those
    means) -- this does draw block edges there. 0.32 s for 32 images 64 -> 256 px on a 2-core CPU (0.76 s with
    PyTorch's bicubic kernel and every block bisected; the outputs within 6e-7).
    Gradients pass through the smooth passes and the clamp; the shift is a constant to them."""
    f = high.shape[-1] // low.shape[-1]
    if f * low.shape[-1] != high.shape[-1]:
        raise ValueError(f"keep_low needs a whole scale factor, not {high.shape[-1]} over {low.shape[-1]}")
    out, low = high.float(), low.float()
    for _ in range(iters):
        out = out - bicubic_up(F.avg_pool2d(out, f) - low, out.shape[-1])

    with torch.no_grad():  # the block shift t with mean(clamp(out + t)) = low
        n, c, s = out.shape[0], out.shape[1], low.shape[-1]
        blocks = out.reshape(n, c, s, f, s, f).transpose(3, 4).reshape(n, c, s, s, f * f)  # (B, C, s, s, f*f)
        shift = low - blocks.mean(-1)  # where no pixel leaves [-1, 1], the mean's own shift
        clamped = (blocks.amax(-1) + shift > 1) | (blocks.amin(-1) + shift < -1)
        if clamped.any():  # elsewhere mean(clamp(out + t)) is monotone in t: bisect, on those blocks alone
            pixels, target = blocks[clamped], low[clamped]  # (K, f*f), (K,)
            lo, hi = -1 - pixels.amax(-1), 1 - pixels.amin(-1)  # every pixel at -1 / every pixel at +1
            for _ in range(bisect):
                mid = (lo + hi) / 2
                above = (pixels + mid[:, None]).clamp(-1, 1).mean(-1) > target
                hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
            shift[clamped] = (lo + hi) / 2
    return (out + shift.repeat_interleave(f, -2).repeat_interleave(f, -1)).clamp(-1, 1).to(high.dtype)


class StageD(nn.Module):
    """Matching-aware discriminator: image (B, 3, S, S) and condition mu (B, c_dim) -> logits (B,).

    ``features(image)`` -> (B, 8df, 4, 4); ``cond_logit(h, mu)`` the matching-aware head; ``uncond_logit(h)`` the
    unconditional head (present with ``uncond`` or ``projection``, else None); ``forward(image, mu)`` is
    ``cond_logit(features(image), mu)``. ``spectral_norm`` and ``projection``: see :class:`Recipe`.
    """

    def __init__(self, image_size: int = 64, c_dim: int = 128, df: int = 64, uncond: bool = False,
                 spectral_norm: bool = False, projection: bool | str = False, match: bool = False,
                 parts: tuple[int, int] | None = None) -> None:
        super().__init__()
        n_down = int(math.log2(image_size)) - 2
        if 4 * 2**n_down != image_size or n_down < 4:
            raise ValueError(f"image_size must be a power of two >= 64, not {image_size}")
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        def bn_act(c: int) -> list[nn.Module]:  # BN + LeakyReLU(0.2); with spectral norm, no BN
            return [nn.Identity(), nn.LeakyReLU(0.2, True)] if spectral_norm else norm_act(c, 0.2)

        widths = [df * 2**i for i in range(n_down)]
        layers: list[nn.Module] = [sn(nn.Conv2d(3, df, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, True)]
        for a, b in zip(widths, widths[1:]):
            layers += [sn(nn.Conv2d(a, b, 4, 2, 1, bias=False)), *bn_act(b)]
        c = widths[-1]
        while c > 8 * df:  # Stage-II: 3x3 convs back to 8df
            layers += [sn(nn.Conv2d(c, c // 2, 3, 1, 1, bias=False)), *bn_act(c // 2)]
            c //= 2
        self.encode = nn.Sequential(*layers)
        self.projection = projection
        if projection:  # psi(phi(x)) + <V mu, phi(x)>; psi is the unconditional head
            self.embed = sn(nn.Linear(c_dim, c * (16 if projection == "map" else 1), bias=False))
        else:
            self.joint = nn.Sequential(sn(nn.Conv2d(c + c_dim, c, 3, 1, 1, bias=False)), *bn_act(c))
            self.logit = sn(matmul_conv.Conv2d(c, 1, 4, 4))  # 4x4 features -> 1: a matrix product on a CPU
        self.logit_uncond = sn(matmul_conv.Conv2d(c, 1, 4, 4)) if (uncond or projection) else None
        # contrastive matching head (Recipe.contrastive): image features and condition into one c_dim space
        self.match = nn.ModuleDict({"image": nn.Linear(16 * c, c_dim), "text": nn.Linear(c_dim, c_dim)}) if match else None
        # per-part colour head (Recipe.parts): (parts, classes per part) logits from the 4x4 features
        self.n_parts = parts
        self.parts = nn.Linear(16 * c, parts[0] * parts[1]) if parts else None
        self.apply(weights_init)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.encode(image)

    def cond_logit(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.projection == "map":  # the inner product at each of the 4x4 positions
            return self.logit_uncond(h).view(-1) + (self.embed(cond.to(h.dtype)).view(h.shape) * h).sum((1, 2, 3))
        if self.projection:
            return self.logit_uncond(h).view(-1) + (self.embed(cond.to(h.dtype)) * h.sum((2, 3))).sum(1)
        h = self.joint(with_condition(h, cond.to(h.dtype)))
        return self.logit(h).view(-1)

    def uncond_logit(self, h: torch.Tensor) -> torch.Tensor | None:
        return None if self.logit_uncond is None else self.logit_uncond(h).view(-1)

    def match_logits(self, h: torch.Tensor, cond: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
        """Features (B, 8df, 4, 4) and conditions (B, c_dim) -> (B, B) cosine similarities / ``temperature``:
        entry (i, j) scores image i with condition j (needs ``match``)."""
        img = F.normalize(self.match["image"](h.flatten(1)).float(), dim=1)
        txt = F.normalize(self.match["text"](cond.to(h.dtype)).float(), dim=1)
        return img @ txt.T / temperature

    def part_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Features (B, 8df, 4, 4) -> (B, parts, classes) logits of each part's colour (needs ``parts``)."""
        return self.parts(h.flatten(1)).view(len(h), *self.n_parts)

    def read_parts(self, image: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) -> (B, parts, classes) part logits (needs ``parts``): D as a re-ranking judge."""
        return self.part_logits(self.features(image))

    def forward(self, image: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.cond_logit(self.features(image), cond)


def build(t_dim: int, c_dim: int = 128, z_dim: int = 100, gf: int = 128, df: int = 64, n_res: int = 4,
          stage2_size: int = 256, upsample: str = "nearest", gf2: int | None = None, df2: int | None = None,
          recipe: str | Recipe | dict = "paper", text_parts: tuple[int, int] = (0, 0)) -> dict[str, nn.Module]:
    """The four sub-networks ``{"G1", "D1", "G2", "D2"}``; ``gf2``/``df2`` (default gf/df) size Stage II.
    ``text_parts``: (slots, width) of the part slots at the end of the text embedding (``BirdSplit.text_parts``; (0, 0):
    none), which Stage-I G attends over with ``Recipe.g_part_attention``.

    As the official code, Stage-I D has the conditional head only and Stage-II D both heads; the recipe's
    ``spectral_norm``, ``projection`` and ``contrastive`` shape both discriminators, ``g_min_channels`` and
    ``g_cond_norm`` Stage-I's generator, ``stage2_skip`` and ``stage2_keep_low`` Stage-II's.
    """
    r = get_recipe(recipe)
    n_up = int(math.log2(stage2_size // 16))
    G1, D1 = build_stage1(t_dim, c_dim, z_dim, gf, df, upsample, r, text_parts)
    return {"G1": G1, "D1": D1,
            "G2": Stage2G(t_dim, c_dim, gf2 or gf, n_res, n_up, upsample, r.ca_logvar_init, r.stage2_skip,
                          r.stage2_keep_low, r.stage2_image_skip, r.stage2_sr_branch, r.stage2_sr_paired),
            "D2": StageD(stage2_size, c_dim, df2 or df, uncond=True, spectral_norm=r.spectral_norm,
                         projection=r.projection, match=r.contrastive > 0, parts=part_classes(r))}


def build_stage1(t_dim: int, c_dim: int = 128, z_dim: int = 100, gf: int = 128, df: int = 64,
                 upsample: str = "nearest", recipe: str | Recipe | dict = "paper",
                 text_parts: tuple[int, int] = (0, 0)) -> tuple[Stage1G, StageD]:
    """Stage I alone, ``(G1, D1)`` as :func:`build` makes them (G1 first): for experiments on Stage I only."""
    r = get_recipe(recipe)
    parts, part_dim = text_parts if r.g_part_attention else (0, 16)
    return (Stage1G(t_dim, c_dim, z_dim, gf, upsample, r.ca_logvar_init, r.g_min_channels, r.g_cond_norm, r.g_slots,
                    parts, part_dim),
            StageD(64, c_dim, df, spectral_norm=r.spectral_norm, projection=r.projection, match=r.contrastive > 0,
                   parts=part_classes(r)))


def part_classes(recipe: Recipe) -> tuple[int, int] | None:
    """The shape of D's part head for ``recipe``: (parts, colours [+ 1 for "drawn by G"]), None without one."""
    from hwlib.data.synthbirds import COLOUR_PARTS, COLOURS

    return (len(COLOUR_PARTS), len(COLOURS) + recipe.parts_fakes) if recipe.parts else None


def part_loss(logits: torch.Tensor, labels: torch.Tensor, per_row: bool = False) -> torch.Tensor:
    """Cross-entropy of part logits (B, P, C) against labels (B, P) int64, averaged over the labels >= 0 (-1: the
    caption names no colour for that part); 0 when there are none. ``per_row``: one average per row, (B,)."""
    known = labels >= 0
    ce = F.cross_entropy(logits.flatten(0, 1).float(), labels.clamp_min(0).flatten(), reduction="none")
    if per_row:
        return (ce.view(labels.shape) * known).sum(1) / known.sum(1).clamp_min(1)
    return (ce * known.flatten()).sum() / known.sum().clamp_min(1)


class NovelFocus(nn.Module):
    """``Recipe.novel_focus``'s memory: the latest part loss of G's image of each novel caption, float32 (M,) in a
    buffer so that checkpoints keep it (prioritised replay, Schaul et al. 2016, over captions). Starts at
    ``start`` (cross-entropy at chance for ten colours, so unseen captions come first)."""

    def __init__(self, n: int, start: float = math.log(10)) -> None:
        super().__init__()
        self.register_buffer("loss", torch.full((n,), float(start)))

    def pick(self, k: int, focus: float) -> torch.Tensor:
        """``k`` caption indices int64: ``round(focus * k)`` drawn in proportion to their latest loss, the rest
        uniformly."""
        n_hard = round(focus * k)
        hard = (torch.multinomial(self.loss.clamp_min(1e-3), n_hard, replacement=True) if n_hard
                else self.loss.new_empty(0, dtype=torch.long))
        return torch.cat([hard, torch.randint(0, len(self.loss), (k - n_hard,), device=self.loss.device)])

    @torch.no_grad()
    def update(self, idx: torch.Tensor, loss: torch.Tensor) -> None:
        """Remember ``loss`` (k,) as the latest part loss of captions ``idx`` (k,)."""
        self.loss[idx] = loss.detach().float()


# ----------------------------------------------------------------------------- training steps


def make_stackgan_step(G: nn.Module, D: StageD, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, *,
                       images: torch.Tensor, embeddings: torch.Tensor, class_ids: torch.Tensor, out_size: int,
                       kl_coef: float = 2.0, z_dim: int = 100, G1: nn.Module | None = None, amp: bool = True,
                       recipe: str | Recipe | dict = "paper", ema: Any = None, swapped: torch.Tensor | None = None,
                       matcher: nn.Module | None = None, labels: torch.Tensor | None = None,
                       novel: tuple[torch.Tensor, torch.Tensor] | None = None, focus: NovelFocus | None = None,
                       teacher: nn.Module | None = None):
    """One StackGAN step for :func:`hwlib.train.fit` over a loader of dataset indices ``(idx (B,),)``.

    ``images`` uint8 (N, 3, L, L) (L = 76 for Stage I, 304 for Stage II), ``embeddings`` (N, 10, t_dim),
    ``class_ids`` (N,), all on the training device (in channels-last memory format where the networks are). Per step, as the official trainer: random crop + flip of
    the real images, one caption embedding each, fresh noise; one D update on real / wrong / fake pairs
    (D conditioned on ``mu`` detached; with an unconditional head, the official
    ``(real + real_u) / 2 + (fake + wrong + fake_u) / 3``, else ``real + (fake + wrong) / 2``), then one G
    update with ``loss_g + kl_coef * KL`` (``loss_g`` sums both heads). The :class:`Recipe` picks the loss, the
    wrong pairs, DiffAugment and (with ``ema``, an :class:`hwlib.train.EMA` of G) the weight average. With ``G1``
    (frozen, eval mode) the step trains Stage II on Stage-I images. ``swapped`` (N, 10, t_dim): the colour-swapped
    captions' embeddings, row for row with ``embeddings``, for ``recipe.wrong == "swap"`` (and the matcher's near
    misses); ``matcher``: the frozen :class:`hwlib.models.matching.Matcher` of ``recipe.matcher``; ``labels`` int64
    (N, 10, 4): the part colours each caption names (:meth:`hwlib.data.cub.BirdSplit.caption_labels`), for
    ``recipe.parts``; ``novel``: (embeddings (M, t_dim), part labels int64 (M, 4)) of the captions of
    ``recipe.novel``; ``focus``: their :class:`NovelFocus`, for ``recipe.novel_focus``; ``teacher``: the frozen
    :class:`hwlib.models.attributes.PartReader` of ``recipe.part_teacher``. ``amp``: bf16 autocast where
    the hardware computes it faster than fp32 (:func:`hwlib.train.autocast`).
    Returns detached ``loss_d``, ``loss_g``, ``kl``, ``d_real``/``d_wrong``/``d_fake`` (mean sigmoid).
    """
    from hwlib.data.cub import augment, pick_embedding, wrong_indices
    from hwlib.data.synthbirds import COLOUR_PARTS, part_label_mode
    from hwlib.gan import contrastive_loss, diff_augment, fake_term, g_loss, matching_aware_d_loss
    from hwlib.models.matching import near_or_other
    from hwlib.train import autocast

    r = get_recipe(recipe)
    if G1 is not None and (r.novel or r.part_teacher):  # Stage-I fields: Stage-II trains on the data set's captions alone
        r = replace(r, novel=0.0, part_teacher=0.0)
    device = images.device
    if r.wrong == "swap" and (swapped is None or swapped.shape != embeddings.shape):
        raise ValueError("Recipe.wrong='swap' needs swapped= embeddings of embeddings' shape "
                         "(BirdSplit.swapped_embeddings(), with a sentence encoder)")
    if swapped is not None and r.caption_mix > 1:
        raise ValueError("Recipe.caption_mix > 1 averages captions, which have no one near miss: use it without "
                         "wrong='swap' and without the matcher")
    if r.matcher and matcher is None:
        raise ValueError("Recipe.matcher > 0 needs matcher= (hwlib.models.matching.train_matcher)")
    if r.parts and (labels is None or labels.shape[:2] != embeddings.shape[:2]):
        raise ValueError("Recipe.parts > 0 needs labels= (N, 10, 4) of the captions' part colours "
                         "(BirdSplit.caption_labels())")
    if r.novel and (not r.parts or novel is None):
        raise ValueError("Recipe.novel > 0 needs Recipe.parts > 0 and novel= (embeddings, labels) of the novel captions "
                         "(synthbirds.novel_set)")
    if r.novel and r.novel_focus and (focus is None or len(focus.loss) != len(novel[0])):
        raise ValueError("Recipe.novel_focus > 0 needs focus= a NovelFocus of the novel captions' length")
    if r.parts and r.caption_mix > 1:
        raise ValueError("Recipe.caption_mix > 1 averages captions, which name different colours: use it without Recipe.parts")
    if r.part_teacher and (teacher is None or not r.parts):
        raise ValueError("Recipe.part_teacher > 0 (Stage I) needs Recipe.parts > 0 (the captions' part labels) and teacher= "
                         "a frozen part reader (attributes.train_part_judge(..., arch='local'))")
    if teacher is not None:
        teacher.eval().requires_grad_(False)
    taught = torch.tensor([j for j, p in enumerate(COLOUR_PARTS) if p != "crown"], device=device)  # see Recipe.part_teacher
    n_text = embeddings.shape[-1]
    # (N, 4): each part's colour as the bird's captions name it most often, D's part head's label for the real image
    bird_labels = torch.from_numpy(part_label_mode(labels.cpu().numpy())).to(device) if r.parts else None

    policy = r.stage2_diffaug if G1 is not None and r.stage2_diffaug is not None else r.diffaug

    def aug(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, policy)

    def step(batch: tuple[torch.Tensor, ...], _: int) -> dict[str, torch.Tensor]:
        (idx,) = batch
        real = augment(images, out_size, index=idx)
        near = asked = None
        if swapped is not None or r.parts:  # one caption index for the embedding, its near miss and its labels
            rows = [embeddings[idx]] + ([swapped[idx]] if swapped is not None else [])
            rows += [labels[idx].to(embeddings.dtype)] if r.parts else []
            picked = pick_embedding(torch.cat(rows, -1)).float()
            text = picked[:, :n_text]
            if swapped is not None:
                near = picked[:, n_text:2 * n_text]
            if r.parts:
                asked = picked[:, -labels.shape[-1]:].round().long()  # (B, 4): the colours this caption names
        else:
            text = pick_embedding(embeddings[idx], average=r.caption_mix).float()
        z = torch.randn(len(idx), z_dim, device=device)
        # the extra half batches below have at least 2 rows: G's batch norm needs two samples to train on (a dry run's
        # batches of 2); from batch 4 on, the half batch itself
        if r.mode_seeking:  # the first half of the captions again, with fresh noise
            z_ms = torch.randn(max(2, len(idx) // 2), z_dim, device=device)
        if r.novel:  # half a batch of captions naming colour combinations no training bird has
            k = max(2, len(idx) // 2)
            pick = focus.pick(k, r.novel_focus) if r.novel_focus else torch.randint(0, len(novel[0]), (k,), device=device)
            text_n, asked_n = novel[0][pick].float(), novel[1][pick]
            z_n = torch.randn(len(pick), z_dim, device=device)
        with autocast(device, amp):
            if G1 is None:
                fake, mu, logvar = G(text, z)
            else:
                with torch.no_grad():
                    low, _, _ = G1(text, z)
                fake, mu, logvar = G(low, text)
            if r.novel:
                fake_n, mu_n, logvar_n = G(text_n, z_n)
            if r.mode_seeking:
                fake_ms = (G(text[:len(z_ms)], z_ms) if G1 is None else G(G1(text[:len(z_ms)], z_ms)[0].detach(), text[:len(z_ms)]))[0]
            cond = mu.detach()
            h_real, h_fake = D.features(aug(real)), D.features(aug(fake.detach()))
            real_logit, fake_logit = D.cond_logit(h_real, cond), D.cond_logit(h_fake, cond)
            if r.wrong == "shift":  # official: image i-1's features with caption i
                wrong_logit = D.cond_logit(h_real[:-1], cond[1:])
            elif r.wrong == "class":
                wrong = augment(images, out_size, index=wrong_indices(class_ids, idx))
                wrong_logit = D.cond_logit(D.features(aug(wrong)), cond)
            elif r.wrong == "hardest":
                pick, valid = hardest_negatives(text, class_ids[idx])
                wrong_logit = D.cond_logit(h_real[valid], cond[pick[valid]])
            elif r.wrong == "swap":  # the shifted pairs and each image with its caption one colour off
                valid = (near != text).any(1)
                with torch.no_grad():
                    near_mu = G.ca(near)[1]
                wrong_logit = torch.cat([D.cond_logit(h_real[:-1], cond[1:]), D.cond_logit(h_real[valid], near_mu[valid])])
            else:
                wrong_logit = None
            loss_d = matching_aware_d_loss(real_logit, wrong_logit, fake_logit, real_uncond=D.uncond_logit(h_real),
                                           fake_uncond=D.uncond_logit(h_fake), loss=r.loss)
            if r.contrastive:  # D learns which caption each real image has
                match_d = contrastive_loss(D.match_logits(h_real, cond))
                if r.contrastive_fakes:  # ... and, caption to image, that G's images are none of them
                    t2i = D.match_logits(torch.cat([h_real, h_fake]), cond).T  # (B, 2B): caption j, real image j
                    match_d = (match_d + contrastive_loss(t2i)) / 2
                loss_d = loss_d + r.contrastive * match_d
            if r.parts:  # D names each real part's colour, from all ten captions of the bird
                parts_d = part_loss(D.part_logits(h_real), bird_labels[idx])
                if r.parts_fakes:  # ... and every part of G's images as "drawn by G"
                    drawn = torch.full_like(asked, D.n_parts[1] - 1)
                    parts_d = (parts_d + part_loss(D.part_logits(h_fake), drawn)) / 2
                loss_d = loss_d + r.parts * parts_d
            if r.novel:  # G's images of the novel captions are fakes too
                loss_d = loss_d + r.novel * fake_term(D.cond_logit(D.features(aug(fake_n.detach())), mu_n.detach()), r.loss)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        D.requires_grad_(False)  # G's update needs gradients through D, not for D's weights
        with autocast(device, amp):
            h = D.features(aug(fake))
            loss_g = g_loss(D.cond_logit(h, cond), loss=r.loss)
            uncond = D.uncond_logit(h)
            if uncond is not None:
                loss_g = loss_g + g_loss(uncond, loss=r.loss)
            if r.contrastive:  # G is trained so that D picks the right caption for its fakes
                match_g = contrastive_loss(D.match_logits(h, cond))
                loss_g = loss_g + (r.contrastive if r.contrastive_g is None else r.contrastive_g) * match_g
            if r.matcher:  # ... and so that a matcher trained on real birds alone picks it
                matched = contrastive_loss(matcher.logits(aug(fake if G1 is None else F.interpolate(
                    fake, size=64, mode="area")), text, None if near is None else near_or_other(text, near)))
                loss_g = loss_g + r.matcher * matched
            if r.parts:  # ... and so that D names the colours its caption asks for
                parts_g = part_loss(D.part_logits(h), asked)
                loss_g = loss_g + r.parts * parts_g
            kl = kl_loss(mu, logvar)
            if r.mode_seeking:  # ... and so that fresh noise draws another bird (MSGAN)
                spread = (fake[:len(z_ms)].float() - fake_ms.float()).abs().mean() / (z[:len(z_ms)] - z_ms).abs().mean()
                loss_g = loss_g + r.mode_seeking / (spread + 1e-5)
            if r.novel:  # ... and, for the novel captions, to pass D's logit and draw the parts they name
                h_n = D.features(aug(fake_n))
                logits_n = D.part_logits(h_n)
                novel_g = g_loss(D.cond_logit(h_n, mu_n), loss=r.loss) + r.parts * part_loss(logits_n, asked_n)
                if r.novel_focus:  # each caption's own part loss, NovelFocus's priority
                    parts_n = part_loss(logits_n.detach(), asked_n, per_row=True)
                loss_g = loss_g + r.novel * novel_g
                kl = (kl + kl_loss(mu_n, logvar_n)) / 2
            if r.part_teacher:  # ... and so that a reader of real birds' parts finds the colours asked
                drawn, wanted = (torch.cat([fake, fake_n]), torch.cat([asked, asked_n])) if r.novel else (fake, asked)
                taught_loss = part_loss(teacher.read_parts(aug(drawn))[:, taught], wanted[:, taught])
                loss_g = loss_g + r.part_teacher * taught_loss
            if G1 is not None and r.stage2_adversarial != 1:  # (0: Stage-II learns from the paired terms alone)
                loss_g = r.stage2_adversarial * loss_g
            if G1 is not None and r.stage2_consistency:  # Stage-II keeps the colours Stage-I drew for the caption
                pooled = F.adaptive_avg_pool2d(fake.float(), low.shape[-1])
                loss_g = loss_g + r.stage2_consistency * (pooled - low.float()).abs().mean()
            if G1 is not None and r.stage2_sr:  # ... and, shown a real bird's 64-px average, draws that bird's detail
                sr = G(F.adaptive_avg_pool2d(real, low.shape[-1]).to(low.dtype), text, paired=True)[0]
                loss_g = loss_g + r.stage2_sr * (sr.float() - real.float()).abs().mean()
        opt_g.zero_grad(set_to_none=True)
        (loss_g + kl_coef * kl).backward()
        opt_g.step()
        D.requires_grad_(True)
        if ema is not None:
            ema.update(G)
        if r.novel and r.novel_focus:
            focus.update(pick, parts_n)
        out = {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "kl": kl.detach(),
               "d_real": torch.sigmoid(real_logit.detach().float()).mean(),
               "d_fake": torch.sigmoid(fake_logit.detach().float()).mean()}
        if wrong_logit is not None:
            out["d_wrong"] = torch.sigmoid(wrong_logit.detach().float()).mean()
        if r.contrastive:
            out["match_d"], out["match_g"] = match_d.detach(), match_g.detach()
        if r.matcher:
            out["matcher"] = matched.detach()
        if r.parts:
            out["parts_d"], out["parts_g"] = parts_d.detach(), parts_g.detach()
        if r.novel:
            out["novel_g"] = novel_g.detach()
        if r.part_teacher:
            out["teacher"] = taught_loss.detach()
        if r.mode_seeking:
            out["ms_spread"] = spread.detach()
        return out

    return step


def hardest_negatives(text: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each caption embedding in ``text`` (B, t_dim), the index of the most similar one (cosine) whose label
    (``labels`` (B,)) differs: ``pick`` int64 (B,), and ``valid`` bool (B,), False where every caption of the batch
    has the same label as that row's."""
    t = F.normalize(text.float(), dim=1)
    sim = (t @ t.T).masked_fill(labels[:, None] == labels[None, :], float("-inf"))
    best, pick = sim.max(dim=1)
    return pick, torch.isfinite(best)


@torch.no_grad()
def critic_ranking(G: nn.Module, D: StageD, images: torch.Tensor, true_text: torch.Tensor,
                   near_text: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Which parts of a caption D checks: for images (N, 3, 64, 64) in [-1, 1] (real, or G's), how often D scores
    the true caption (N, t_dim) above each kind of near miss ({kind: (N, t_dim)},
    :func:`hwlib.data.synthbirds.near_miss_captions`), conditioned as in training on G's CA mean ``mu``.
    ``{"cond": {kind: fraction}}`` for the matching-aware logit and, with a contrastive head, ``"match"`` for it
    (:func:`hwlib.metrics.attributes.near_miss_ranking`; 0.5: D ignores that part). D normalises the batch with
    its own statistics, as in training (a copy in train mode; D itself is left alone)."""
    from hwlib.metrics.attributes import near_miss_ranking

    D = copy.deepcopy(D).train()
    device = next(D.parameters()).device
    h = D.features(images.to(device))

    def mu(text: torch.Tensor) -> torch.Tensor:
        return G.ca(text.to(device).float())[1]

    heads = {"cond": lambda t: D.cond_logit(h, mu(t))}
    if D.match is not None:
        heads["match"] = lambda t: D.match_logits(h, mu(t)).diagonal()
    return {name: near_miss_ranking(score, true_text, near_text) for name, score in heads.items()}


def to_channels_last(images: torch.Tensor, *nets: nn.Module | None) -> torch.Tensor:
    """Put ``nets`` (None skipped) in channels-last memory format, in place; returns ``images`` (B, C, H, W) in it."""
    for net in nets:
        if net is not None:
            net.to(memory_format=torch.channels_last)
    return images.contiguous(memory_format=torch.channels_last)


def train_stage(G: nn.Module, D: StageD, *, images: torch.Tensor, embeddings: torch.Tensor, class_ids: torch.Tensor,
                out_size: int, epochs: int, batch_size: int, run_dir: str | os.PathLike, lr: float = 2e-4,
                betas: tuple[float, float] = (0.5, 0.999), kl_coef: float = 2.0, z_dim: int = 100,
                lr_decay_epochs: int | None = None, G1: nn.Module | None = None, seed: int = 0, resume: bool = True,
                config: Any = None, recipe: str | Recipe | dict = "paper", ema: Any = None, channels_last: bool = True,
                swapped: torch.Tensor | None = None, matcher: nn.Module | None = None, labels: torch.Tensor | None = None,
                novel: tuple[torch.Tensor, torch.Tensor] | None = None, teacher: nn.Module | None = None,
                **fit_kwargs: Any) -> History:
    """Train one StackGAN stage (Stage I, or Stage II with a frozen ``G1``) through :func:`hwlib.train.fit`.

    ``images`` uint8 (N, 3, L, L), ``embeddings`` (N, 10, t_dim) and ``class_ids`` (N,) on the training device,
    as :func:`make_stackgan_step` takes them (with ``swapped`` for ``recipe.wrong == "swap"``, ``matcher`` for
    ``recipe.matcher``, ``labels`` for ``recipe.parts``, ``novel`` for ``recipe.novel``, ``teacher`` for ``recipe.part_teacher``). Sets G's text standardisation from ``embeddings``, then trains with
    Adam (``lr`` for G, ``lr * recipe.lr_d`` for D, ``betas``), the learning rates halved every ``lr_decay_epochs``
    epochs as the official trainer (constant if None), over shuffled batches of ``batch_size`` dataset indices.
    ``ema``: an :class:`hwlib.train.EMA` of G, updated every step and checkpointed (build it from
    ``recipe.ema``). ``channels_last``: G, D, the EMA copy, ``G1`` and the images are kept in channels-last memory
    format -- the same computation up to float rounding, 1.25x (Stage I) and 1.37x (Stage II) faster per step on a 2-core
    AMD EPYC in bf16 (README, "Speed on a CPU"). ``run_dir``, ``seed``, ``resume``, ``config`` and ``fit_kwargs``
    (``sample_fn``, ``grid_dir``, ``on_epoch_end``, ``desc``, ...) go to ``fit``. Returns fit's per-step :class:`~hwlib.train.History`.
    """
    from hwlib.data.cub import index_loader
    from hwlib.train import adam, fit

    r = get_recipe(recipe)
    G.ca.fit_text_stats(embeddings)
    if channels_last:
        images = to_channels_last(images, G, D, G1, ema.module if ema is not None else None)
    branch = getattr(G, "sr_branch", None)  # Recipe.stage2_sr_branch, at its own learning rate
    g_params = [{"params": [p for n, p in G.named_parameters() if not n.startswith("sr_branch.")]},
                {"params": list(branch.parameters()), "lr": lr * r.stage2_sr_lr}] if branch is not None else G.parameters()
    optimizers = {"G": adam(g_params, lr=lr, betas=betas), "D": adam(D.parameters(), lr=lr * r.lr_d, betas=betas)}
    schedulers = ({k: torch.optim.lr_scheduler.StepLR(o, step_size=lr_decay_epochs, gamma=0.5) for k, o in optimizers.items()}
                  if lr_decay_epochs else {})
    if schedulers and branch is not None and not r.stage2_sr_halving:  # Recipe.stage2_sr_halving: the branch's rate stays
        schedulers["G"] = torch.optim.lr_scheduler.LambdaLR(
            optimizers["G"], [functools.partial(halved, every=lr_decay_epochs), constant])
    modules = {"G": G, "D": D}
    if G1 is None and r.novel and r.novel_focus:  # the novel captions' latest losses, checkpointed with the networks
        modules["novel_focus"] = focus = NovelFocus(len(novel[0])).to(images.device)
    else:
        focus = None
    step = make_stackgan_step(G, D, optimizers["G"], optimizers["D"], images=images, embeddings=embeddings,
                              class_ids=class_ids, out_size=out_size, kl_coef=kl_coef, z_dim=z_dim, G1=G1, recipe=r,
                              ema=ema, swapped=swapped, matcher=matcher, labels=labels, novel=novel, focus=focus,
                              teacher=teacher)
    loader = index_loader(len(images), batch_size, seed=seed, device=images.device)
    return fit(step, loader, epochs=epochs, run_dir=run_dir, modules=modules, optimizers=optimizers,
               schedulers=schedulers, emas={"G": ema} if ema is not None else None, seed=seed, resume=resume,
               config=config, **fit_kwargs)


def halved(epoch: int, every: int) -> float:
    """The learning-rate factor of a rate halved every ``every`` epochs (``StepLR(step_size=every, gamma=0.5)``)."""
    return 0.5 ** (epoch // every)


def constant(epoch: int) -> float:
    """The learning-rate factor of a rate that never changes."""
    return 1.0


def standing_stats(G: nn.Module, embeddings: torch.Tensor, n_batches: int = 16, batch_size: int = 64,
                   seed: int = 0, G1: nn.Module | None = None) -> nn.Module:
    """Re-estimate G's BatchNorm statistics (:func:`hwlib.train.standing_stats`) on ``n_batches`` batches of training
    captions ``embeddings`` (N, 10, t_dim) (one random caption each) and fresh noise, drawn with ``seed``; Stage II
    (with the frozen ``G1``) on G1's images of them. For an EMA of G's weights, whose copied statistics are the live
    G's. Returns G in the mode it came in."""
    from hwlib.train import standing_stats as _standing

    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    z_dim = (G1 or G).z_dim

    def forward(_: int) -> None:
        idx = torch.randint(0, len(embeddings), (batch_size,), generator=gen)
        cap = torch.randint(0, embeddings.shape[1], (batch_size,), generator=gen)
        text = embeddings[idx.to(embeddings.device), cap.to(embeddings.device)].to(device).float()
        z = torch.randn(batch_size, z_dim, generator=gen).to(device)
        if G1 is None:
            G(text, z)
        else:
            G(G1(text, z)[0], text)

    return _standing(G, forward, n_batches)


RERANK_SCORES = ("joint", "expected")


def part_scores(judge: nn.Module, images: torch.Tensor, labels: torch.Tensor, score: str = "joint") -> torch.Tensor:
    """How sure ``judge`` is that ``images`` (B, 3, S, S) in [-1, 1] have the colours ``labels`` (B, parts) int64 ask
    for (-1: not asked): (B,), 0 where nothing is asked. ``score``: ``"joint"``, the sum over the asked parts of
    log p(asked colour) (the log-probability that every asked part is drawn as asked; one part the generator rarely
    draws outweighs the rest), or ``"expected"``, the sum of p(asked colour) (the expected number of asked parts drawn
    as asked, which is what per-part colour accuracy counts).
    ``judge``: anything with ``read_parts(images) -> (B, parts, classes)`` logits -- Stage-I D's part head
    (:meth:`StageD.read_parts`) or a classifier G never trained against
    (:func:`hwlib.models.attributes.train_part_judge`)."""
    if score not in RERANK_SCORES:
        raise ValueError(f"score must be one of {RERANK_SCORES}, got {score!r}")
    logp = F.log_softmax(judge.read_parts(images).float(), dim=-1)
    known = labels >= 0
    asked = logp.gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1)
    return ((asked if score == "joint" else asked.exp()) * known).sum(1)


def caption_samples(G1: nn.Module, captions: Sequence[str], encode: Any, z_dim: int, per_caption: int, seed: int = 0,
                    noise_seed: int | None = None, **sampling: Any) -> torch.Tensor:
    """Stage-I's birds of ``captions``, ``per_caption`` each in the captions' order -> (len(captions) * per_caption,
    3, 64, 64) in [-1, 1], drawn by :func:`generate` with ``sampling`` (``ca_noise``, ``rerank``, ``judge``, and
    ``labels`` row for row with the repeated captions). ``seed`` fixes the noise z; the CA noise and the re-ranking's
    extra candidates are drawn from torch's global generator seeded with ``noise_seed`` (default ``seed``) inside a
    fork, so the caller's draws stay as they were. ``encode``: captions -> embeddings (N, t_dim), e.g.
    ``BirdSplit.encode``."""
    text = torch.as_tensor(encode(list(captions))).repeat_interleave(per_caption, 0)
    z = torch.randn(len(text), z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed if noise_seed is None else noise_seed)
        return generate(G1, text, z=z, **sampling)[0]


def pair_birds(G1: nn.Module, encode: Any, z_dim: int, seed: int = 0, per_caption: int = 16,
               part: str = "belly") -> torch.Tensor:
    """Stage-I's birds of :func:`hwlib.data.synthbirds.pair_captions` ``(part)``: ``per_caption`` per caption in their
    order, one draw each at the trained CA noise -> (100 * per_caption, 3, 64, 64) in [-1, 1], for
    :func:`hwlib.metrics.pair_composition` (:func:`caption_samples` with ``seed``)."""
    from hwlib.data.synthbirds import pair_captions

    return caption_samples(G1, pair_captions(part), encode, z_dim, per_caption, seed)


@torch.no_grad()
def generate(G1: nn.Module, text: torch.Tensor, G2: nn.Module | None = None, z: torch.Tensor | None = None,
             batch_size: int = 64, ca_noise: float = 1.0, keep_low: bool = False, rerank: int = 1,
             judge: nn.Module | None = None, labels: torch.Tensor | None = None,
             ca_noise2: float | None = None, rerank_score: str = "joint") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stage-I images (N, 3, 64, 64) and, with ``G2``, Stage-II images (N, 3, S, S), in [-1, 1], on the CPU.

    ``text`` (N, t_dim); ``z`` (N, z_dim) defaults to fresh Gaussian noise. Networks run in eval mode.
    ``ca_noise`` scales the conditioning augmentation's noise, ``c = mu + ca_noise * sigma * eps``: 1 samples c as
    in training (the paper), 0 takes its mean, a truncation of the caption's noise as BigGAN truncates z's;
    ``ca_noise2`` is Stage II's (default: ``ca_noise``).
    ``keep_low``: each Stage-II image is projected onto the images whose 64-px average is its Stage-I image
    (:func:`keep_low`), so Stage-II keeps every colour Stage-I drew and adds only what lies within each 4x4 block.
    ``rerank``: draw this many Stage-I candidates per caption (``z`` first, then fresh noise) and keep the one
    ``judge`` finds most likely to have the colours ``labels`` (N, parts) int64 ask for (:func:`part_scores`; -1: not
    asked): re-ranking by a judge, as DALL-E re-ranks its samples with CLIP (Ramesh et al. 2021), here with Stage-I
    D's part head (a recipe with ``parts``) or a classifier of the training birds' part colours that G never trained
    against (:func:`hwlib.models.attributes.train_part_judge`), by ``rerank_score`` (:func:`part_scores`'s ``score``).
    Stage II refines the chosen image.
    """
    if rerank > 1 and (judge is None or labels is None or isinstance(judge, StageD) and judge.parts is None):
        raise ValueError("generate(rerank > 1) needs a judge -- Stage-I's discriminator with a part head (a recipe with "
                         "parts > 0) or attributes.train_part_judge's classifier -- and labels, the colours each "
                         "caption asks for (synthbirds.part_labels(captions))")
    G1.ca.noise = ca_noise
    if G2 is not None:
        G2.ca.noise = ca_noise if ca_noise2 is None else ca_noise2
    was_training = judge.training if judge is not None else False
    try:
        if judge is not None:
            judge.eval()
        return _generate(G1, text, G2, z, batch_size, keep_low, rerank, judge, labels, rerank_score)
    finally:
        for G in (G1, G2):
            if G is not None:
                G.ca.noise = 1.0
        if judge is not None:
            judge.train(was_training)


@torch.no_grad()
def refine_real(G2: nn.Module, real: torch.Tensor, text: torch.Tensor, keep_low_: bool = False,
                batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-II as a super-resolver of real birds: ``real`` (N, 3, S, S) in [-1, 1] average-pooled to 64 px and refined
    by ``G2`` with ``text`` (N, t_dim) (projected as :func:`generate`'s ``keep_low`` with ``keep_low_``). Returns
    (Stage-II's images, the bicubic up-sampling of the same 64-px images), float (N, 3, S, S) on the CPU."""
    low = F.adaptive_avg_pool2d(real, 64)
    device = next(G2.parameters()).device
    was_training = G2.training
    G2.eval()
    outs = []
    for i in range(0, len(real), batch_size):
        lo = low[i:i + batch_size].to(device)
        high = G2(lo, text[i:i + batch_size].to(device).float())[0]
        outs.append((keep_low(high, lo) if keep_low_ else high).float().cpu())
    G2.train(was_training)
    up = F.interpolate(low, size=real.shape[-1], mode="bicubic", align_corners=False).clamp(-1, 1)
    return torch.cat(outs), up


def real_detail(G2: nn.Module, split: Any, size: int, n: int = 150, keep_low_: bool = False,
                batch_size: int = 16, real: torch.Tensor | None = None) -> dict[str, float]:
    """How much of real birds' own detail Stage-II draws, where the right detail is known: the first ``n`` birds of
    ``split`` (a :class:`hwlib.data.cub.BirdSplit`; centre ``size``-px crops in [-1, 1], or ``real`` (n, 3, size, size)
    when the caller has them decoded already) refined from 64 px by :func:`refine_real` with each bird's first caption.
    Returns :func:`hwlib.metrics.high_frequency_error` of Stage-II's images and of bicubic up-sampling against the
    real birds (``hf_error_stage2``, ``hf_error_bicubic``; 1: no detail added, below 1: the bird's own detail, above
    1: detail it does not have)."""
    from hwlib.data.cub import center_crop
    from hwlib.metrics import high_frequency_error

    if real is None:
        real = center_crop(split.images(size * 76 // 64, np.arange(min(n, len(split)))), size)
    real = real[:n]
    high, up = refine_real(G2, real, torch.from_numpy(split.embeddings[:len(real), 0]), keep_low_, batch_size)
    return {"hf_error_stage2": high_frequency_error(high, real), "hf_error_bicubic": high_frequency_error(up, real)}


def _generate(G1: nn.Module, text: torch.Tensor, G2: nn.Module | None, z: torch.Tensor | None,
              batch_size: int, keep_low_: bool = False, rerank: int = 1, judge: nn.Module | None = None,
              labels: torch.Tensor | None = None, rerank_score: str = "joint") -> tuple[torch.Tensor, torch.Tensor | None]:
    G1.eval()
    if G2 is not None:
        G2.eval()
    device = next(G1.parameters()).device
    z = torch.randn(len(text), G1.z_dim) if z is None else z
    lows, highs = [], []
    for i in range(0, len(text), batch_size):
        t, zz = text[i:i + batch_size].to(device).float(), z[i:i + batch_size].to(device)
        if rerank > 1:  # candidates (rerank, B, ...), z first; keep each caption's best by the judge
            zz = torch.cat([zz, torch.randn((rerank - 1) * len(t), G1.z_dim).to(device)])
            cand = G1(t.repeat(rerank, 1), zz)[0]
            score = part_scores(judge, cand, labels[i:i + batch_size].to(device).repeat(rerank, 1),
                                rerank_score).view(rerank, len(t))
            low = cand.view(rerank, len(t), *cand.shape[1:])[score.argmax(0), torch.arange(len(t), device=device)]
        else:
            low = G1(t, zz)[0]
        lows.append(low.float().cpu())
        if G2 is not None:
            high = G2(low, t)[0]
            highs.append((keep_low(high, low) if keep_low_ else high).float().cpu())
    return torch.cat(lows), (torch.cat(highs) if G2 is not None else None)
